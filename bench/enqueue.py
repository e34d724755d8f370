"""Benchmark 2: listener throughput, one Celery task per message, on Redis, no worker running.

Measured in-process on kbridge's own GroupProcessor, from partition assignment until
the commit that covers every message; then the queue's length must equal the number
enqueued, so nothing counted was lost on the way to Redis.
"""

from __future__ import annotations

from . import raw
from .app import build
from .harness import Bench, create_topic, in_process_listener, produce, wait_done
from .results import Result, Target

NAME = "enqueue"


def run(bench: Bench) -> Result:
    topic, queue = bench.config.topic(NAME), bench.config.queue(NAME)
    create_topic(bench, topic)
    ends = produce(bench, topic, bench.sizes.messages)
    n = sum(ends.values())

    kb, _ = build(bench.config)
    try:
        with raw.Bracket(bench, topic, ends) as baseline, \
                in_process_listener(bench, kb, NAME, ends, NAME) as processor:
            wait_done(processor, timeout=max(600, n / 20), what=NAME)
            queued = int(bench.redis.llen(queue))
            stats = processor.stats
            if not (stats.enqueued == queued == n):
                raise AssertionError(f"enqueued {stats.enqueued}, {queued} in Redis queue {queue}, expected {n}")
    finally:
        bench.redis.delete(queue)
    return Result("enqueue (1 task/msg)", "msg/s", value=n / processor.elapsed, baseline=baseline.rate,
                  baseline_name="raw", target=Target(">=", 0.5),
                  details={**baseline.details(), "seconds": round(processor.elapsed, 3), "messages": n,
                           "tasks_in_queue": queued})
