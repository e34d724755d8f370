"""ordering="key" across a 4-process celery worker, with faults; skip_duplicates under kill -9 of listeners and a
worker child. Real Tansu, Redis, `celery worker` and `kbridge listen`.

Sizes shrink for CI; KBRIDGE_FULL_SIZES=1 runs the sizes the feature is specified with (64 keys x 100 sequence
numbers; 10,000 messages streamed) and prints the same figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator

import pytest
from celery import Celery

from kbridge.interchange import to_wire
from kbridge.params import Params
from kbridge.testing import processes
from kbridge.testing.kafka import Stream, produce, read_topic, wait_until
from kbridge.testing.processes import Process

from .conftest import CELERY_APP, PipelineRun
from .test_listener_faults import events, finish, kill_listeners

pytestmark = pytest.mark.integration

FULL = os.environ.get("KBRIDGE_FULL_SIZES") == "1"
KEYS, PER_KEY = (64, 100) if FULL else (24, 20)
# CI: 48 s of stream; three kill cycles, each waiting out a dead member's session (6 s) before the next listener
# joins, took 18 to 28 s
STREAMED, RATE = (10_000, 400) if FULL else (4800, 100)
REDELIVERED = 300 if FULL else 150


@pytest.fixture(scope="module")
def four_workers(pipeline: PipelineRun) -> Iterator[Process]:
    worker = processes.celery_worker(CELERY_APP, pipeline.env, [f"{pipeline.queue}-ordered"], concurrency=4,
                                     name="ordered-worker").start()
    try:
        worker.wait_for_log("ready.", timeout=60)
        yield worker
    finally:
        worker.stop()


def inversions(seq: list[int]) -> int:
    """Pairs seen in the wrong order."""
    return sum(1 for i in range(len(seq)) for j in range(i + 1, len(seq)) if seq[i] > seq[j])


def without_repeats(seq: list[int]) -> list[int]:
    """A task re-run after its worker was killed appears twice in a row: at least once, still in order."""
    return [s for i, s in enumerate(seq) if i == 0 or s != seq[i - 1]]


def sequences(pipeline: PipelineRun, topic: str, worker: Process, fail: tuple[int, int] | None = None,
              kill: bool = False) -> tuple[dict[int, list[int]], float, int | None]:
    """Produce KEYS x PER_KEY keyed messages, run a listener until all are performed; each key's sequence as seen."""
    pipeline.create(topic, 4)
    values, keys = [], []
    order = [k for k in range(KEYS) for _ in range(PER_KEY)]
    random.Random(16).shuffle(order)  # keys interleaved at random, each key's sequence numbers in order
    next_seq = [0] * KEYS
    for k in order:
        s, next_seq[k] = next_seq[k], next_seq[k] + 1
        body = {"k": k, "s": s, **({"fail": 2} if (k, s) == fail else {}),
                **({"slow": True} if kill and (k, s) == (3, PER_KEY // 3) else {})}
        values.append(json.dumps(body).encode())
        keys.append(f"key-{k}".encode())
    store = pipeline.store()
    started = time.monotonic()
    written = produce(pipeline.kafka.bootstrap, topic, values, keys=keys)
    total = sum(len(v) for v in written.values())
    listener = pipeline.listener(topic)
    killed = None
    try:
        if kill:  # the slow message's process, mid-task: its successors must wait for the re-run
            killed = int(wait_until(lambda: store.lindex(f"{pipeline.run}:started:{topic}", 0), 400,
                                    what="the slow message to start", alive=[listener, worker]))
            assert killed != worker.pid, "expected a prefork child, not the worker's main process"
            os.kill(killed, signal.SIGKILL)
        wait_until(lambda: len(pipeline.seen(topic)) >= total, 600, what=f"{total} performs",
                   alive=[listener, worker])
    finally:
        assert listener.stop() == 0, listener.log()[-3000:]
    took = time.monotonic() - started
    seen = {k: [int(s) for s in store.lrange(f"{pipeline.run}:order:{topic}:{k}", 0, -1)] for k in range(KEYS)}
    return seen, took, killed


def test_ordering_by_key_keeps_every_keys_sequence_on_four_workers(
    pipeline: PipelineRun, four_workers: Process
) -> None:
    topic = pipeline.topic("ordered-key")
    seen, took, _ = sequences(pipeline, topic, four_workers)
    bad = {k: s for k, s in seen.items() if s != list(range(PER_KEY))}
    total_inversions = sum(inversions(s) for s in seen.values())
    print(f"\n[ordering-key] keys={KEYS} per_key={PER_KEY} workers=4 seconds={took:.1f} "
          f"out_of_order_keys={len(bad)} inversions={total_inversions}")
    assert not bad, {k: s[:20] for k, s in list(bad.items())[:3]}


@pytest.mark.skipif(not FULL, reason="the benchmark `python -m bench --only ordering` prints the control in CI")
def test_unordered_control_shows_inversions(pipeline: PipelineRun, four_workers: Process) -> None:
    """The same stream without ordering: the pool runs a key's messages in any order."""
    topic = pipeline.topic("unordered")
    seen, took, _ = sequences(pipeline, topic, four_workers)
    total_inversions = sum(inversions(s) for s in seen.values())
    keys_inverted = sum(1 for s in seen.values() if inversions(s))
    print(f"\n[unordered-control] keys={KEYS} per_key={PER_KEY} workers=4 seconds={took:.1f} "
          f"keys_with_inversions={keys_inverted} inversions={total_inversions}")
    assert sorted(s for seq in seen.values() for s in seq) == sorted(list(range(PER_KEY)) * KEYS)


@pytest.mark.parametrize("mode", [
    "key", pytest.param("partition", marks=pytest.mark.skipif(not FULL, reason="the same gate, one key per partition")),
])
def test_ordering_holds_through_a_killed_worker_child_and_a_message_failing_twice(
    pipeline: PipelineRun, four_workers: Process, mode: str
) -> None:
    topic = pipeline.topic(f"ordered-{mode}-faults")
    failing = (5, PER_KEY // 2)
    seen, took, killed = sequences(pipeline, topic, four_workers, fail=failing, kill=True)
    bad = {k: s for k, s in seen.items() if without_repeats(s) != list(range(PER_KEY))}
    repeats = sum(len(s) - len(without_repeats(s)) for s in seen.values())
    attempts = pipeline.store().hgetall(f"{pipeline.run}:attempts:{topic}")
    starts = pipeline.store().llen(f"{pipeline.run}:started:{topic}")
    print(f"\n[ordering-{mode}-faults] keys={KEYS} per_key={PER_KEY} seconds={took:.1f} killed_child={killed} "
          f"killed_task_started={starts}x re_runs={repeats} "
          f"failing_message_attempts={[int(v) for v in attempts.values()]} "
          f"out_of_order_keys={len(bad)}")
    assert not bad, {k: s[:30] for k, s in list(bad.items())[:3]}
    assert [int(v) for v in attempts.values()] == [3]  # failed twice, then succeeded, still in its place
    assert starts == 2  # killed mid-task, then run again, before any later message of its key


def test_skip_duplicates_completes_each_offset_once_through_listener_and_worker_kills(
    pipeline: PipelineRun, four_workers: Process
) -> None:
    topic = pipeline.topic("once")
    pipeline.create(topic, 3)
    values = events(STREAMED)
    # the slow message comes near the end, so the final listener hands it over, after the three kills
    slow = STREAMED - 101
    values[slow] = json.dumps({"n": slow, "skip": False, "slow": True}).encode()
    stream = Stream(pipeline.kafka.bootstrap, topic, values, rate=RATE)
    stream.start()
    store = pipeline.store()
    kills = kill_listeners(pipeline, topic, stream, 3, longest=1.5)
    final = pipeline.listener(topic, name="listener-final")
    pid = int(wait_until(lambda: store.lindex(f"{pipeline.run}:started:{topic}", 0), 90,
                         what="the slow message to start", alive=[final, four_workers]))
    os.kill(pid, signal.SIGKILL)
    finish(pipeline, topic, stream, final, "skip-duplicates kill-9 listener x3 + worker child")
    # A kill -9 lands between a hand-over and its commit only by chance, so redeliveries are also made for sure:
    # copies of performed messages, as a listener restarting from an older commit or the ledger would send.
    records = [r for r in read_topic(pipeline.kafka.bootstrap, topic, STREAMED)
               if not json.loads(r.value)["skip"]][:REDELIVERED]
    forger = Celery("redeliver", broker=pipeline.redis_url)
    route_id = f"{pipeline.group_id(topic)}/{topic}"
    for r in records:
        copy = Params(topic=topic, partition=r.partition, offset=r.offset, raw_payload=r.value)
        forger.send_task("kbridge.perform", args=[route_id, [to_wire(copy)]], queue=f"{pipeline.queue}-ordered")
    wait_until(lambda: skipped(pipeline, topic) >= len(records), 60, what="the redelivered copies to be skipped",
               alive=[four_workers])
    seen = pipeline.seen(topic)
    twice = {k: c for k, c in seen.items() if c != 1}
    starts = store.llen(f"{pipeline.run}:started:{topic}")
    print(f"[skip-duplicates] listener kills at performed counts {kills}; killed worker child {pid}; slow message "
          f"started {starts}x; redelivered copies {len(records)}; duplicates skipped {skipped(pipeline, topic)}; "
          f"offsets completed more than once: {len(twice)}")
    assert not twice, sorted(twice.items())[:10]
    assert set(seen) >= {(r.partition, r.offset) for r in records}
    assert starts == 2


def skipped(pipeline: PipelineRun, topic: str) -> int:
    """Counted by the test app's subscriber to the duplicate_skipped event."""
    return int(pipeline.store().hget(f"{pipeline.run}:duplicate_skipped:{topic}", "messages") or 0)
