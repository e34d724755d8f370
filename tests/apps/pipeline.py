"""The app the integration tests run, as a user would write it.

Configured from the environment so the listener and worker subprocesses of one
test module share a broker, a Redis and a unique run id (topic and queue names).
Every perform() records "<partition>:<offset>" -> run count in a Redis hash, so
tests can count performed, lost and duplicated messages.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.testing.kafka import FAST_GROUP

RUN = os.environ.get("PIPELINE_RUN", "local")
KAFKA = os.environ.get("PIPELINE_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("PIPELINE_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = f"kbridge-{RUN}"

celery_app = Celery("pipeline", broker=REDIS_URL)
celery_app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

app = KBridge(client_id=f"pipe-{RUN}", kafka={"bootstrap_servers": KAFKA, **FAST_GROUP}, celery=celery_app)

_redis: redis.Redis | None = None


def store() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(REDIS_URL)
    return _redis


def seen_key(topic: str) -> str:
    return f"{RUN}:seen:{topic}"


def record(consumer: BaseConsumer, extra: dict[str, Any] | None = None) -> None:
    pipe = store().pipeline()
    for p in consumer.params_batch:
        pipe.hincrby(seen_key(p.topic), f"{p.partition}:{p.offset}", 1)
        if extra is not None:
            pipe.hset(f"{RUN}:extra:{p.topic}", f"{p.partition}:{p.offset}", extra[f"{p.partition}:{p.offset}"])
    pipe.execute()


class RecordingConsumer(BaseConsumer):
    @before_enqueue
    def not_skipped(self) -> bool:
        return not self.params.payload.get("skip")

    def perform(self) -> None:
        record(self)


def raw_bytes(raw: bytes) -> bytes:
    return raw


class BinaryConsumer(BaseConsumer):
    """Stores the hex of what perform() received, to compare byte for byte."""

    def perform(self) -> None:
        record(self, {f"{p.partition}:{p.offset}": p.payload.hex() for p in self.params_batch})


app.topic(f"{RUN}.events", consumer=RecordingConsumer)
app.topic(f"{RUN}.inline", consumer=RecordingConsumer, backend="inline")
app.topic(f"{RUN}.binary", consumer=BinaryConsumer, deserializer=raw_bytes)
app.topic(f"{RUN}.stop", consumer=RecordingConsumer)
