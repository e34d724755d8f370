"""Fault scenarios on the worker side: poison, failures, timeouts, a killed child, forged tasks.

Each prints produced / performed / duplicated / lost / dead-lettered, and asserts them.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest
from celery import Celery

from kbridge.dlq import ATTEMPTS, ERROR_CLASS, ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC
from kbridge.interchange import to_wire
from kbridge.params import Params
from kbridge.testing import processes
from kbridge.testing.kafka import read_topic, wait_until
from kbridge.testing.processes import Process

from .conftest import PipelineRun

pytestmark = pytest.mark.integration


def report(name: str, produced: int, seen: dict, keep: set, dead: list) -> None:  # type: ignore[type-arg]
    dupes = sum(c - 1 for c in seen.values())
    lost = len(keep - set(seen))
    print(f"\n[{name}] produced={produced} performed={len(seen)} duplicated={dupes} lost={lost} "
          f"dead_lettered={len(dead)}")


def headers(record) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    return dict(record.headers)


def run_listener(pipeline: PipelineRun, topic: str, until, what: str, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    listener = pipeline.listener(topic)
    try:
        wait_until(until, timeout, what=what, alive=[listener])
    finally:
        assert listener.stop() == 0, listener.log()[-3000:]


@pytest.mark.parametrize("suffix", ["poison", "poison-worker"])
def test_poison_messages_are_dead_lettered_and_the_rest_performed(
    pipeline: PipelineRun, celery_worker: Process, suffix: str
) -> None:
    """poison: a filter parses in the listener; poison-worker: perform parses in the worker."""
    topic = pipeline.topic(suffix)
    pipeline.create(topic, 1)
    good = [json.dumps({"n": i}).encode() for i in range(20)]
    poison = [b"{not json", b"\xff\xfe\x00 not utf-8", b"[1, 2"]
    values = good[:10] + poison + good[10:]
    written = pipeline.produce(topic, values)[0]
    poison_offsets = {written[10 + i] for i in range(len(poison))}
    keep = {(0, o) for o in written} - {(0, o) for o in poison_offsets}

    run_listener(pipeline, topic, lambda: set(pipeline.seen(topic)) >= keep, "good messages performed")
    dead = pipeline.dead_letters(topic, len(poison))
    seen = pipeline.seen(topic)
    report(suffix, len(values), seen, keep, dead)

    assert set(seen) == keep
    assert sorted(r.value for r in dead) == sorted(poison)
    for r in dead:
        h = headers(r)
        assert h[ORIGIN_TOPIC] == topic.encode()
        assert h[ORIGIN_PARTITION] == b"0"
        assert int(h[ORIGIN_OFFSET]) in poison_offsets
        assert h[ERROR_CLASS] == b"kbridge.errors.DeserializationError"
        assert h[ATTEMPTS] == b"1"  # a parse error is never retried


def test_always_failing_perform_retries_then_dead_letters(pipeline: PipelineRun, celery_worker: Process) -> None:
    topic = pipeline.topic("failing")  # max_retries=2
    pipeline.create(topic, 1)
    written = pipeline.produce(topic, [b'{"n": 1}', b'{"n": 2}'])[0]
    store = pipeline.store()

    run_listener(pipeline, topic, lambda: len(pipeline.dead_letters(topic, 2, timeout=1)) == 2, "two dead letters")
    dead = pipeline.dead_letters(topic, 2)
    attempts = {o: int(store.hget(f"{pipeline.run}:attempts:{topic}", f"0:{o}") or 0) for o in written}
    hooks = {o: store.lrange(f"{pipeline.run}:after_failure:{topic}:0:{o}", 0, -1) for o in written}
    report("failing", 2, {}, set(), dead)
    print(f"[failing] attempts={attempts} after_failure_calls={ {o: len(h) for o, h in hooks.items()} }")

    assert attempts == {o: 3 for o in written}  # max_retries + 1
    assert hooks == {o: [b"RuntimeError"] * 3 for o in written}
    for r in dead:
        h = headers(r)
        assert h[ATTEMPTS] == b"3"
        assert h[ERROR_CLASS] == b"builtins.RuntimeError"
        assert b"always failing" in h["kbridge-error-message"]
    assert sorted(int(headers(r)[ORIGIN_OFFSET]) for r in dead) == written


def test_hanging_perform_times_out_calls_after_failure_and_retries(
    pipeline: PipelineRun, celery_worker: Process
) -> None:
    topic = pipeline.topic("hanging")  # timeout=1s
    pipeline.create(topic, 1)
    written = pipeline.produce(topic, [b'{"n": 1}'])[0]
    run_listener(pipeline, topic, lambda: pipeline.seen(topic), "the retry to complete", timeout=60)
    store = pipeline.store()
    hooks = store.lrange(f"{pipeline.run}:after_failure:{topic}:0:{written[0]}", 0, -1)
    attempts = int(store.hget(f"{pipeline.run}:attempts:{topic}", f"0:{written[0]}") or 0)
    report("hanging", 1, pipeline.seen(topic), {(0, written[0])}, [])
    print(f"[hanging] attempts={attempts} after_failure={hooks}")
    assert hooks == [b"SoftTimeLimitExceeded"]
    assert attempts == 2
    assert pipeline.seen(topic) == {(0, written[0]): 1}


def test_killed_worker_child_task_runs_again(pipeline: PipelineRun, celery_worker: Process) -> None:
    topic = pipeline.topic("slow")
    pipeline.create(topic, 1)
    written = pipeline.produce(topic, [b'{"n": 1}'])[0]
    started_key = f"{pipeline.run}:started:{topic}:0:{written[0]}"
    store = pipeline.store()
    listener = pipeline.listener(topic)
    try:
        pid = int(wait_until(lambda: store.lindex(started_key, 0), 60, what="the task to start", alive=[listener]))
        assert pid != celery_worker.pid, "expected a prefork child, not the worker's main process"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pipeline.seen(topic), 60, what="the task to run again", alive=[listener, celery_worker])
    finally:
        listener.stop()
    starts = store.lrange(started_key, 0, -1)
    report("worker-child-kill", 1, pipeline.seen(topic), {(0, written[0])}, [])
    print(f"[worker-child-kill] starts={len(starts)} (killed pid {pid})")
    assert len(starts) == 2
    assert pipeline.seen(topic) == {(0, written[0]): 1}


def test_forged_task_with_unknown_route_is_refused_and_dead_lettered(
    pipeline: PipelineRun, celery_worker: Process
) -> None:
    forger = Celery("forger", broker=pipeline.broker_url or pipeline.redis_url)
    topic = pipeline.topic("forged")
    forged = Params(topic=topic, partition=0, offset=7, raw_payload=b'{"evil": true}', headers={"h": b"v"})
    args = [f"pipe-{pipeline.run}_nope/{topic}", [to_wire(forged)]]
    forger.send_task("kbridge.perform", args=args, queue=pipeline.queue)
    # Never to a topic the task names itself: to the app's one fixed topic, with the whole task.
    dead = read_topic(pipeline.kafka.bootstrap, f"pipe-{pipeline.run}.unroutable", 1, timeout=60)
    report("forged", 0, pipeline.seen(topic), set(), dead)
    assert len(dead) == 1
    h = headers(dead[0])
    assert json.loads(dead[0].value)["args"] == args
    assert h[ERROR_CLASS] == b"kbridge.errors.UnknownRouteError"
    assert pipeline.seen(topic) == {}
    assert "refused task" in celery_worker.log() and "is not routed" in celery_worker.log()


def test_dlq_replay_sends_dead_letters_back_to_their_origin(pipeline: PipelineRun) -> None:
    """Runs after the failing scenario: its two dead letters go back to the failing topic."""
    topic = pipeline.topic("failing")
    dead = pipeline.dead_letters(topic, 2, timeout=5)
    assert len(dead) == 2, "the failing scenario must run first"
    cmd = processes.Process(
        "replay",
        [sys.executable, "-m", "kbridge", "dlq", "replay", f"{topic}.dlq", "--app", "tests.apps.pipeline:app"],
        processes.child_env(pipeline.env),
    ).start()
    assert cmd.wait(60) == 0, cmd.log()
    assert "replayed 2 message(s)" in cmd.log()
    back = read_topic(pipeline.kafka.bootstrap, topic, 4)
    replayed = back[2:]
    assert sorted(r.value for r in replayed) == sorted(r.value for r in dead)
    # the dead-letter headers stay behind; only the replay count travels, to break a poison loop
    assert [[(k, v) for k, v in r.headers if k.startswith("kbridge-")] for r in replayed] == [
        [("kbridge-replays", b"1")]] * 2
