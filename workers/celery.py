"""The Celery app, in Django's usual `proj/celery.py` place, so `celery -A workers worker` finds it."""

from __future__ import annotations

from celery import Celery

from .settings import BROKER_URL

app = Celery("workers", broker=BROKER_URL)
app.conf.update(
    # kbridge sends JSON only; refusing anything else keeps pickle out of the workers.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="workers",
    # Nothing reads task results: the Kafka offsets and the consumer's own side effects are the record.
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    # kbridge tasks are acks_late: a small prefetch keeps unacked work from piling up in one process,
    # and a long visibility timeout keeps Redis from redelivering slow tasks that are still running.
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 3600},
    worker_max_tasks_per_child=10_000,
    timezone="UTC",
    enable_utc=True,
)
