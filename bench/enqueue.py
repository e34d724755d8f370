"""Benchmark 2: listener throughput, one Celery task per message, on Redis, no worker running.

Measured in-process on kbridge's own GroupProcessor, from partition assignment until
the commit that covers every message; then the queue's length must equal the number
enqueued, so nothing counted was lost on the way to Redis. Three payload sizes, each
against a raw read of its own topic: on small payloads the raw read is cheap, so
kbridge's per-message cost shows most.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from . import raw
from .app import build
from .harness import Bench, create_topic, in_process_listener, payload, produce, wait_done
from .results import Result, Target

NAME = "enqueue"


def small_payload(i: int) -> bytes:
    """~60 bytes."""
    return json.dumps({"id": i, "user": f"u-{i % 1000}", "event": "click", "ts": 1764763200}).encode()


def medium_payload(i: int) -> bytes:
    """~500 bytes."""
    return json.dumps({"id": i, "user": f"user-{i % 1000}", "event": "order_placed",
                       "items": [{"sku": f"SKU-{(i + k) % 9973:05d}", "qty": k + 1, "price": 9.99 + k}
                                 for k in range(8)],
                       "note": "deliver to the back door, please ring twice"}).encode()


# group (and topic) -> (payload maker, label, target ratio)
SIZES: dict[str, tuple[Callable[[int], bytes], str, float]] = {
    "enqueue": (payload, "~200 B", 0.5),
    "enqueue_small": (small_payload, "~60 B", 0.6),
    "enqueue_medium": (medium_payload, "~500 B", 0.6),
}


def run(bench: Bench) -> list[Result]:
    return [_one(bench, group, *spec) for group, spec in SIZES.items()]


def _one(bench: Bench, group: str, make: Callable[[int], bytes], label: str, target: float) -> Result:
    topic, queue = bench.config.topic(group), bench.config.queue(group)
    create_topic(bench, topic)
    ends = produce(bench, topic, bench.sizes.messages, make)
    n = sum(ends.values())

    kb, _ = build(bench.config)
    try:
        with raw.Bracket(bench, topic, ends) as baseline, \
                in_process_listener(bench, kb, group, ends, group) as processor:
            wait_done(processor, timeout=max(600, n / 20), what=group)
            queued = int(bench.redis.llen(queue))
            stats = processor.stats
            if not (stats.enqueued == queued == n):
                raise AssertionError(f"enqueued {stats.enqueued}, {queued} in Redis queue {queue}, expected {n}")
    finally:
        bench.redis.delete(queue, f"kbridge.pending.{queue}", f"kbridge.ledger.{queue}",
                           f"kbridge.ledger_index.{queue}")
    return Result(f"enqueue (1 task/msg, {label})", "msg/s", value=n / processor.elapsed, baseline=baseline.rate,
                  baseline_name="raw", target=Target(">=", target),
                  details={**baseline.details(), "seconds": round(processor.elapsed, 3), "messages": n,
                           "payload_bytes": len(make(0)), "tasks_in_queue": queued})
