"""The app tests/integration/test_metrics.py runs: one topic with a filter, one whose perform always fails.

Configured from the environment, like tests/apps/pipeline.py. METRICS_WORKER_PORT becomes
the metrics_port setting, so a plain `celery -A tests.apps.metrics_app worker` serves
metrics with no kbridge command involved; the listener is given its own port with
`kbridge listen --metrics-port`.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.testing.kafka import FAST_GROUP

RUN = os.environ.get("METRICS_RUN", "local")
KAFKA = os.environ.get("METRICS_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("METRICS_REDIS", "redis://127.0.0.1:6379/0")
WORKER_PORT = os.environ.get("METRICS_WORKER_PORT")
QUEUE = f"kbridge-metrics-{RUN}"

celery_app = Celery("metrics_app", broker=REDIS_URL)
celery_app.conf.update(
    task_default_queue=QUEUE, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
)

app = KBridge(
    client_id=f"metrics-{RUN}",
    kafka={"bootstrap_servers": KAFKA, **FAST_GROUP},
    celery=celery_app,
    metrics_port=int(WORKER_PORT) if WORKER_PORT else None,
)


class Counted(BaseConsumer):
    @before_enqueue
    def not_skipped(self) -> bool:
        return not self.params.payload.get("skip")

    def perform(self) -> None:
        p = self.params
        redis.Redis.from_url(REDIS_URL).hincrby(f"{RUN}:performed", f"{p.partition}:{p.offset}", 1)


class Failing(BaseConsumer):
    def perform(self) -> None:
        raise RuntimeError(f"always failing at offset {self.params.offset}")


app.topic(f"{RUN}.events", consumer=Counted)
app.topic(f"{RUN}.failing", consumer=Failing, max_retries=2, retry_backoff=0.2, retry_backoff_max=0.5)
