"""Benchmark: Redis memory per queued task, kbridge's fast path (task message and ledger entry) against a plain
Celery apply_async of the same payload, no worker running.

Each side fills its own queue with the same number of tasks carrying the same ~200-byte
payloads; the value is the growth of Redis's used_memory (INFO memory) per task. The
plain side is what a Celery user would enqueue without kbridge: the payload as the task's
argument.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from kbridge.params import Params
from kbridge.runtime import Runtime

from .app import BARE_TASK, build
from .config import done_key
from .harness import Bench, payload
from .results import Result, Target

NAME = "enqueue"  # kbridge's side enqueues through the enqueue route's backend, to a queue of its own here
CHUNK = 2000


def _used(bench: Bench) -> int:
    info: dict[str, Any] = bench.redis.info("memory")
    return int(info["used_memory"])


def run(bench: Bench) -> Result:
    n = bench.sizes.memory_tasks
    kb, celery_app = build(bench.config)
    route = next(iter(kb.routes.select([NAME])[0].topics.values()))
    ours = bench.config.queue("redismem-kbridge")
    theirs = bench.config.queue("redismem-plain")
    route = dataclasses.replace(route, queue=ours)
    backend = Runtime.of(kb).backend(route.backend)
    try:
        before = _used(bench)
        now_ms = time.time() * 1000.0
        for start in range(0, n, CHUNK):
            backend.enqueue(route, [
                Params(topic=route.name, partition=0, offset=i, raw_payload=payload(i), timestamp_ms=now_ms,
                       receive_time_ms=now_ms, deserializer=route.deserializer)
                for i in range(start, min(n, start + CHUNK))
            ])
        kbridge_bytes = (_used(bench) - before) / n

        before = _used(bench)
        task = celery_app.tasks[BARE_TASK]
        with celery_app.producer_or_acquire() as producer:
            for i in range(n):
                task.apply_async(args=[done_key(theirs), payload(i).decode()], queue=theirs, producer=producer)
        plain_bytes = (_used(bench) - before) / n
        queued = (int(bench.redis.llen(ours)), int(bench.redis.llen(theirs)))
        entries = int(bench.redis.zcard(f"kbridge.pending.{ours}"))
    finally:
        bench.redis.delete(ours, theirs, f"kbridge.pending.{ours}", f"kbridge.pending_seq.{ours}",
                           f"kbridge.ledger.{ours}", f"kbridge.ledger_index.{ours}")
    if queued != (n, n):
        raise AssertionError(f"queued {queued}, expected {n} on each side")
    return Result("Redis memory per queued task", "B", value=kbridge_bytes, baseline=plain_bytes,
                  baseline_name="apply_async", target=Target("<=", 1.2),
                  details={"tasks_per_side": n, "ledger_entries": entries,
                           "kbridge_bytes_per_task": round(kbridge_bytes, 1),
                           "plain_bytes_per_task": round(plain_bytes, 1)})
