"""The app the benchmarks run, written as a user would, configured by BENCH_* env vars.

The listener (`kbridge listen --app bench.app:app`) and the celery worker
(`celery -A bench.app:celery_app worker`) subprocesses import this module; the bench
process builds its own copy with build() for the in-process listener.

Every consumer group is named after its benchmark (enqueue, batch, permsg, memory,
latency) and routes one topic to one queue of its own. Performs record what they did
in Redis, under keys derived from the topic, so the bench process can count and time
them without trusting kbridge's own bookkeeping.
"""

from __future__ import annotations

import random
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from kbridge import BaseConsumer, KBridge
from kbridge.routing.route import DEFAULTS as ROUTE_DEFAULTS

from .config import BenchConfig, done_key

BARE_TASK = "bench.bare"
BARE_ACKS_LATE_TASK = "bench.bare_acks_late"
BENCHES = ("enqueue", "enqueue_small", "enqueue_medium", "batch", "permsg", "permsg_pack", "memory", "latency",
           "backlog", "ordered", "unordered", "dedup")

CONFIG = BenchConfig.from_env()

_redis: redis.Redis | None = None


def store() -> redis.Redis:
    """One Redis client per process (prefork children build their own after the fork)."""
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(CONFIG.redis_url)
    return _redis


def record_done(key: str, count: int) -> None:
    """The trivial task body shared by kbridge consumers and the bare Celery task: one pipelined round trip."""
    pipe = store().pipeline(transaction=False)
    pipe.incrby(f"{key}:count", count)
    pipe.rpush(f"{key}:times", time.time())
    pipe.execute()


def ready_key(run: str) -> str:
    return f"bench-{run}:workers_ready"


class CountingConsumer(BaseConsumer):
    """One message per task; the body is the same as the bare task's."""

    def perform(self) -> None:
        record_done(done_key(self.topic.name), len(self.params_batch))


class BatchConsumer(BaseConsumer):
    """One task per polled batch; parses every payload, as a real batch consumer would."""

    def perform(self) -> None:
        payloads = self.params_batch.payloads
        record_done(done_key(self.topic.name), len(payloads))


class LatencyConsumer(BaseConsumer):
    """Records produce -> perform-start latency in ms, from the send time the producer put in the payload."""

    def perform(self) -> None:
        started = time.time()
        pipe = store().pipeline(transaction=False)
        for p in self.params_batch:
            pipe.rpush(f"{done_key(self.topic.name)}:latency_ms", (started - p.payload["sent"]) * 1000.0)
        pipe.execute()


class KeyedConsumer(BaseConsumer):
    """Works 0-4 ms (a short I/O wait), then the same body: what ordering costs shows against parallel work."""

    def perform(self) -> None:
        time.sleep(random.uniform(0, 0.004))
        record_done(done_key(self.topic.name), len(self.params_batch))


CONSUMERS: dict[str, tuple[type[BaseConsumer], dict[str, Any]]] = {
    "enqueue": (CountingConsumer, {}),
    "enqueue_small": (CountingConsumer, {}),
    "enqueue_medium": (CountingConsumer, {}),
    "permsg_pack": (CountingConsumer, {"pack": 50}),
    "backlog": (CountingConsumer, {}),
    "batch": (BatchConsumer, {"batch_consuming": True}),
    "permsg": (CountingConsumer, {}),
    "memory": (CountingConsumer, {}),
    "latency": (LatencyConsumer, {}),
    "ordered": (KeyedConsumer, {"ordering": "key"}),
    "unordered": (KeyedConsumer, {}),
    "dedup": (CountingConsumer, {"skip_duplicates": True}),
}


def build(config: BenchConfig) -> tuple[KBridge, Celery]:
    """A Celery app on the bench Redis, and a KBridge app with one consumer group per benchmark."""
    celery_app = Celery(f"bench-{config.run}", broker=config.redis_url)
    celery_app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue=config.queue("default"),
    )

    @celery_app.task(name=BARE_TASK, shared=False)
    def bare(key: str, payload: str) -> None:
        """What a Celery user would write without kbridge: the payload as an argument, the same body."""
        record_done(key, 1)

    @celery_app.task(name=BARE_ACKS_LATE_TASK, shared=False, acks_late=True, reject_on_worker_lost=True)
    def bare_acks_late(key: str, payload: str) -> None:
        """The bare task with the delivery options kbridge.perform must have (design rule 4)."""
        record_done(key, 1)

    kb = KBridge(
        client_id=config.client_id,
        kafka={
            "bootstrap_servers": config.kafka, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
            **config.kafka_tuning(),
        },
        celery=celery_app,
        max_poll_records=config.max_poll_records,
    )
    for bench in BENCHES:
        consumer, options = CONSUMERS[bench]
        if "pack" in options and "pack" not in ROUTE_DEFAULTS:
            continue  # a kbridge without pack=N (measuring an older version)
        kb.consumer_group(bench).topic(config.topic(bench), consumer=consumer, queue=config.queue(bench), **options)
    return kb, celery_app


@worker_ready.connect(weak=False)
def _announce_ready(**_: Any) -> None:
    """Lets the bench wait for a worker without depending on its log level or wording."""
    store().incr(ready_key(CONFIG.run))


app, celery_app = build(CONFIG)

