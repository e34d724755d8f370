"""Benchmark 3: batch consuming end to end, Kafka -> listener -> Redis -> celery worker -> perform(params_batch).

One task per polled batch of a partition, so per-task costs are amortised and the
pipeline should run near raw consume speed. The listener runs in-process (timing
starts at partition assignment); a real prefork worker (-c 2) runs the performs,
which parse every payload and record how many messages they saw and when.
"""

from __future__ import annotations

from . import raw
from .app import build
from .config import done_key
from .harness import Bench, create_topic, in_process_listener, produce, start_worker, wait_done, wait_for_count
from .results import Result, Target

NAME = "batch"


def run(bench: Bench) -> Result:
    topic, queue = bench.config.topic(NAME), bench.config.queue(NAME)
    create_topic(bench, topic)
    ends = produce(bench, topic, bench.sizes.messages)
    n = sum(ends.values())
    key = done_key(topic)

    worker = start_worker(bench, [queue], name=f"{NAME}-worker")
    kb, _ = build(bench.config)
    try:
        with raw.Bracket(bench, topic, ends) as baseline, \
                in_process_listener(bench, kb, NAME, ends, NAME) as processor:
            wait_done(processor, timeout=max(600, n / 20), what=NAME)
            wait_for_count(bench, key, n, timeout=max(600, n / 20), what=f"{NAME} performs", alive=[worker])
        assert processor.assigned_at is not None
        times = [float(t) for t in bench.redis.lrange(f"{key}:times", 0, -1)]
        elapsed = max(times) - processor.assigned_at
        performed = int(bench.redis.get(f"{key}:count") or 0)
    finally:
        worker.stop()
        bench.redis.delete(queue)
    return Result("batch end to end", "msg/s", value=n / elapsed, baseline=baseline.rate, baseline_name="raw",
                  target=Target(">=", 0.5),
                  details={**baseline.details(), "seconds": round(elapsed, 3), "messages": n, "performed": performed,
                           "tasks": len(times), "listener_seconds": round(processor.elapsed, 3),
                           "worker_log": worker.log_path})
