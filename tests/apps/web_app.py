"""The app tests/integration/test_web.py shows in `kbridge web`: one routed topic, <run>.orders, 3 partitions.

Listeners report every second and are gone after 6 s of silence. perform() counts each
message in Redis; a payload starting with b"poison" fails unless it carries the
kbridge-replays header that `dlq replay` adds, so it is dead-lettered once and performed
once replayed.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from kbridge import BaseConsumer, KBridge
from kbridge.dlq import REPLAYS
from kbridge.testing.kafka import FAST_GROUP

RUN = os.environ.get("WEB_RUN", "local")
KAFKA = os.environ.get("WEB_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("WEB_REDIS", "redis://127.0.0.1:6379/0")
BROKER_URL = os.environ.get("WEB_BROKER") or REDIS_URL
QUEUE = f"kbridge-web-{RUN}"

celery_app = Celery("web", broker=BROKER_URL)
celery_app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True,
                       worker_hijack_root_logger=False)

app = KBridge(
    client_id=f"web-{RUN}",
    kafka={"bootstrap_servers": KAFKA, **FAST_GROUP},
    celery=celery_app,
    web_reports=True,
    report_interval=1.0,
    report_timeout=6.0,
    enqueue_backoff_max=1.0,
    shutdown_timeout=10.0,
)


class Orders(BaseConsumer):
    def perform(self) -> None:
        store = redis.Redis.from_url(REDIS_URL)
        payload = self.params.raw_payload or b""
        if payload.startswith(b"poison"):
            if REPLAYS not in self.params.headers:
                raise ValueError("poison: refused the first time")
            store.incr(f"{RUN}:performed-poison")
            store.incr(f"{RUN}:performed-poison:{payload.decode('utf-8', 'replace')}")  # which letter it was
        store.incr(f"{RUN}:performed")


app.topic(f"{RUN}.orders", consumer=Orders, max_retries=0)
