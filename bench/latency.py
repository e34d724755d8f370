"""Benchmark 6: produce -> perform-start latency at a steady rate (default 200 msg/s for 15 s).

A real listener subprocess and a real prefork worker (-c 2); each message carries the
wall-clock time it was sent and perform() records how long ago that was when it
started. The baseline is a plain kafka-python consumer in this process, manually
assigned to the same topic, timing the same messages: the latency Kafka itself adds.
The first second is warm-up (connections being opened) and is left out of both.
"""

from __future__ import annotations

import json
import math
import threading
import time

from kafka import KafkaProducer

from kbridge.testing.kafka import wait_until

from .config import done_key
from .harness import Bench, assigned_consumer, create_topic, payload, start_listener, start_worker
from .results import Result, Target

NAME = "latency"
WARMUP_SECONDS = 1.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class RawLatency(threading.Thread):
    """Reads the topic as it is produced and notes, per message, now - sent (ms)."""

    def __init__(self, bench: Bench, topic: str, expected: int) -> None:
        super().__init__(name="bench-raw-latency", daemon=True)
        self.consumer, tps = assigned_consumer(bench, topic)
        for tp in tps:
            self.consumer.position(tp)  # resolve the start offset now, before anything is produced
        self.expected = expected
        self.latencies: list[tuple[int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set() and len(self.latencies) < self.expected:
                for records in self.consumer.poll(timeout_ms=100).values():
                    now = time.time()
                    for r in records:
                        message = json.loads(r.value)
                        self.latencies.append((message["id"], (now - message["sent"]) * 1000.0))
        finally:
            self.consumer.close()


def _steady_produce(bench: Bench, topic: str, total: int, rate: float) -> float:
    """Send total messages at a fixed rate, each stamped when sent; returns the achieved rate."""
    producer = KafkaProducer(bootstrap_servers=bench.kafka.bootstrap, acks="all", linger_ms=0)
    try:
        parts = bench.sizes.partitions
        started = time.monotonic()
        for i in range(total):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.send(topic, value=payload(i), partition=i % parts)
        producer.flush()
        return total / (time.monotonic() - started)
    finally:
        producer.close()


def run(bench: Bench) -> list[Result]:
    topic, queue = bench.config.topic(NAME), bench.config.queue(NAME)
    rate, seconds = bench.sizes.latency_rate, bench.sizes.latency_seconds
    total = int(rate * seconds)
    warmup = int(rate * WARMUP_SECONDS)
    key = f"{done_key(topic)}:latency_ms"
    create_topic(bench, topic)

    worker = start_worker(bench, [queue], name=f"{NAME}-worker")
    try:
        listener = start_listener(bench, NAME, name=f"{NAME}-listener")
        try:
            raw = RawLatency(bench, topic, total)
            raw.start()
            achieved = _steady_produce(bench, topic, total, rate)
            wait_until(lambda: int(bench.redis.llen(key)) >= total, 120, interval=0.2,
                       what=f"{total} performs of {topic}", alive=[worker, listener])
            raw.join(30)
            raw.stop.set()
        finally:
            listener.stop()
    finally:
        worker.stop()
        bench.redis.delete(queue)

    # Perform records are not ordered by id; the warm-up cut is by arrival, which is close enough.
    kbridge_ms = [float(v) for v in bench.redis.lrange(key, 0, -1)][warmup:]
    raw_ms = [ms for i, ms in raw.latencies if i >= warmup]
    details = {
        "rate_target": rate, "rate_achieved": round(achieved, 1), "messages": total, "warmup_messages": warmup,
        "kbridge_ms": _summary(kbridge_ms), "raw_ms": _summary(raw_ms),
        "listener_log": listener.log_path, "worker_log": worker.log_path,
    }
    p99 = Result("latency p99", "ms", value=percentile(kbridge_ms, 99), baseline=percentile(raw_ms, 99),
                 baseline_name="raw p99", target=Target("<=", 100, on="value"), details=details)
    if p99.met is False and p99.target is not None and not p99.target.met(p99.baseline, None):
        p99.note = (
            f"plain Kafka alone has p99 {p99.baseline:.0f} ms here, so this is broker-bound: Tansu answers a fetch "
            "only after ~fetch_max_wait_ms/2 even with data waiting (a real Kafka answers at once); "
            "--fetch-max-wait-ms 10 shows what kbridge itself adds"
        )
    return [
        Result("latency p50", "ms", value=percentile(kbridge_ms, 50), baseline=percentile(raw_ms, 50),
               baseline_name="raw p50", details=details),
        p99,
    ]


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"count": len(values), "p50": round(percentile(values, 50), 2), "p90": round(percentile(values, 90), 2),
            "p99": round(percentile(values, 99), 2), "max": round(max(values), 2)}
