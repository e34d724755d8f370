"""The app tests/integration/test_consumer_toolkit.py runs: batches with a cap, manual offsets, callbacks.

Configured from the environment (TOOLKIT_RUN, TOOLKIT_KAFKA, TOOLKIT_REDIS) so that the
listener and worker subprocesses of one test module share a broker, a Redis and unique
topic, group and queue names. Consumers record what they saw in Redis, as JSON, so the
test can check order and sizes from outside the processes.
"""

from __future__ import annotations

import json
import os

import redis
from celery import Celery

from kbridge import BaseConsumer, KBridge, after_fetch, after_poll, before_enqueue, before_poll, before_stop
from kbridge.testing.kafka import FAST_GROUP

RUN = os.environ.get("TOOLKIT_RUN", "local")
KAFKA = os.environ.get("TOOLKIT_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("TOOLKIT_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = f"kbridge-toolkit-{RUN}"
BATCH_CAP = 7
MANUAL_CAP = 5

celery_app = Celery("toolkit", broker=REDIS_URL)
celery_app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

app = KBridge(client_id=f"toolkit-{RUN}", kafka={"bootstrap_servers": KAFKA, **FAST_GROUP}, celery=celery_app)

_redis: redis.Redis | None = None


def store() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(REDIS_URL)
    return _redis


def key(what: str) -> str:
    return f"{RUN}:{what}"


class BatchConsumer(BaseConsumer):
    """One celery task per batch of at most BATCH_CAP accepted messages; records each task's batch."""

    @before_enqueue
    def not_skipped(self) -> bool:
        return not self.params.payload.get("skip")

    def perform(self) -> None:
        batch = self.params_batch
        store().rpush(key("batches"), json.dumps({
            "partitions": sorted({p.partition for p in batch}),
            "offsets": [p.offset for p in batch],
            "payloads": batch.payloads,
        }))


class ManualConsumer(BaseConsumer):
    """Inline, manual offsets: marks a message only when its payload says so."""

    def perform(self) -> None:
        pipe = store().pipeline()
        for p in self.params_batch:
            pipe.hincrby(key("manual:seen"), str(p.offset), 1)
        pipe.execute()
        for p in self.params_batch:
            if p.payload["mark"]:
                self.mark_as_consumed(p)


class CallbacksConsumer(BaseConsumer):
    """Records every callback and perform, in one Redis list, in the order the listener ran them."""

    def note(self, event: str) -> None:
        store().rpush(key("callbacks"), event)

    @before_poll
    def polling(self) -> None:
        self.note(f"before_poll {len(self.params_batch)}")

    @after_fetch
    def fetched(self) -> None:
        offsets = [p.offset for p in self.params_batch]
        self.note(f"after_fetch {self.params_batch[0].partition} {json.dumps(offsets)}")

    @after_fetch
    def broken(self) -> None:
        raise RuntimeError("broken after_fetch, on purpose")

    @after_poll
    def polled(self) -> None:
        self.note("after_poll")

    @before_stop
    def stopping(self) -> None:
        self.note("before_stop")

    def perform(self) -> None:
        self.note(f"perform {self.params.partition} {self.params.offset}")


app.topic(f"{RUN}.batch", consumer=BatchConsumer, batch_consuming=True, max_batch_size=BATCH_CAP)
app.topic(f"{RUN}.manual", consumer=ManualConsumer, backend="inline", batch_consuming=True,
          max_batch_size=MANUAL_CAP, automatically_mark_as_consumed=False)
app.topic(f"{RUN}.callbacks", consumer=CallbacksConsumer, backend="inline")
