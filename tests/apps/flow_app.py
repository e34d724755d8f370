"""The app tests/integration/test_flow_control.py runs: one route per flow-control feature.

Configured from the environment like tests/apps/pipeline.py. perform() records, per message,
how long after its Kafka timestamp it started; tick() records where it ran; the listener
records every hand-over (the `enqueue` event) with its time.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import redis
from celery import Celery

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.testing.kafka import FAST_GROUP

RUN = os.environ.get("FLOW_RUN", "local")
KAFKA = os.environ.get("FLOW_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("FLOW_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = f"kbridge-flow-{RUN}"

celery_app = Celery("flow_app", broker=REDIS_URL)
celery_app.conf.update(task_default_queue=QUEUE, worker_hijack_root_logger=False,
                       broker_connection_retry_on_startup=True, worker_prefetch_multiplier=4)

# metadata_max_age_ms: a topic created for a pattern route is seen within 2 s rather than 5 minutes.
app = KBridge(client_id=f"flow-{RUN}", kafka={"bootstrap_servers": KAFKA, **FAST_GROUP, "metadata_max_age_ms": 2000},
              celery=celery_app)

_store: redis.Redis | None = None


def store() -> redis.Redis:
    global _store
    if _store is None:
        _store = redis.Redis.from_url(REDIS_URL)
    return _store


class Recorder(BaseConsumer):
    """Per message: milliseconds from its Kafka timestamp to the start of perform()."""

    def perform(self) -> None:
        now_ms = time.time() * 1000
        pipe = store().pipeline()
        for p in self.params_batch:
            pipe.hset(f"{RUN}:lag:{p.topic}", f"{p.partition}:{p.offset}", now_ms - (p.timestamp_ms or 0))
        pipe.execute()


class Ticker(Recorder):
    def tick(self) -> None:
        tp = self.partition
        store().rpush(f"{RUN}:ticks:{tp.topic}", f"{tp.partition}:{len(self.params_batch)}:{os.getpid()}")


class Poison(Recorder):
    @before_enqueue
    def readable(self) -> bool:
        return bool(self.params.payload)  # a payload that is not JSON raises here: dead-lettered


def _enqueued(event: str, payload: dict[str, Any]) -> None:
    store().rpush(f"{RUN}:enqueued:{payload['topic']}", f"{time.time()}:{payload['messages']}")


def _expired(event: str, payload: dict[str, Any]) -> None:
    store().incrby(f"{RUN}:expired", payload["messages"])


app.monitor.subscribe("enqueue", _enqueued)
app.monitor.subscribe("expired", _expired)

with app.consumer_group("timing") as group:
    group.topic(f"{RUN}.delayed", consumer=Recorder, delay_by=3)
    group.topic(f"{RUN}.undelayed", consumer=Recorder)
app.topic(f"{RUN}.expire", consumer=Recorder, expire_after=600)
app.topic(f"{RUN}.throttle", consumer=Recorder, throttle=(50, 1.0))
with app.consumer_group("patterns") as group:
    group.pattern("dynamic", rf"{re.escape(RUN)}\.dyn\..+", consumer=Recorder)
with app.consumer_group("ticks") as group:
    group.topic(f"{RUN}.tick-celery", consumer=Ticker, tick_interval=1)
    group.topic(f"{RUN}.tick-inline", consumer=Ticker, tick_interval=1, backend="inline")
app.topic(f"{RUN}.breaker", consumer=Poison, dead_letter_cooldown=600)
