"""pack=N against the real services: a worker child killed mid-pack and a message failing inside a pack."""

from __future__ import annotations

import json
import os
import signal

import pytest

from kbridge.backends.celery import ledger
from kbridge.dlq import ATTEMPTS, ORIGIN_OFFSET
from kbridge.testing.kafka import wait_until
from kbridge.testing.processes import Process

from .conftest import PipelineRun

pytestmark = pytest.mark.integration


def test_pack_survives_a_killed_child_and_retries_a_failing_message_alone(
    pipeline: PipelineRun, celery_worker: Process
) -> None:
    topic = pipeline.topic("packed")  # pack=10, max_retries=2
    pipeline.create(topic, 1)
    values = [{"n": i} for i in range(30)]
    values[3]["hold"] = True  # its worker child is killed while it runs
    values[25]["fail"] = True
    written = pipeline.produce(topic, [json.dumps(v).encode() for v in values])[0]
    held, failing = written[3], written[25]
    keep = {(0, o) for o in written} - {(0, failing)}
    store = pipeline.store()

    listener = pipeline.listener(topic)
    try:
        started = f"{pipeline.run}:started:{topic}:0:{held}"
        pid = int(wait_until(lambda: store.lindex(started, 0), 60, what="the held message to start",
                             alive=[listener]))
        assert pid != celery_worker.pid, "expected a prefork child, not the worker's main process"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: set(pipeline.seen(topic)) >= keep and pipeline.dead_letters(topic, 1, timeout=1),
                   90, what="every message performed and one dead letter", alive=[listener, celery_worker])
        pipeline.wait_all_committed(topic, {0: written})
    finally:
        assert listener.stop() == 0, listener.log()[-3000:]

    seen = pipeline.seen(topic)
    dead = pipeline.dead_letters(topic, 1)
    attempts = {int(k.decode().split(":")[1]): int(v)
                for k, v in store.hgetall(f"{pipeline.run}:attempts:{topic}").items()}
    hooks = store.lrange(f"{pipeline.run}:after_failure:{topic}:0:{failing}", 0, -1)
    tasks = store.lrange(f"{pipeline.run}:tasks:{topic}", 0, -1)
    lost = keep - set(seen)
    dupes = sum(c - 1 for c in seen.values())
    print(f"\n[pack] produced={len(written)} performed={len(seen)} duplicated={dupes} lost={len(lost)} "
          f"dead_lettered={len(dead)} tasks={len(set(tasks))} failing_attempts={attempts[failing]}")

    assert not lost
    assert (0, failing) not in seen
    assert len(dead) == 1 and int(dict(dead[0].headers)[ORIGIN_OFFSET]) == failing
    assert dict(dead[0].headers)[ATTEMPTS] == b"3"  # its own attempt count: max_retries + 1
    assert attempts[failing] == 3 and hooks == [b"RuntimeError"] * 3
    # Only the failing message was retried: its pack's other messages ran once.
    failing_pack = [o for o in written[20:] if o != failing]
    assert all(seen[(0, o)] == 1 and attempts[o] == 1 for o in failing_pack)
    # The killed pack ran again: the held message twice, and all 30 messages in far fewer tasks than 30.
    assert attempts[held] == 2 and seen[(0, held)] == 1
    assert len(set(tasks)) <= 30 // 2
    # Every task closed its ledger entry, packs and the failing message's own tasks alike.
    wait_until(lambda: store.zcard(ledger.ledger_key(pipeline.queue)) == 0, 30, what="the ledger to empty")
