"""The app of tests/integration/test_foreign_producers.py: records written by producers other than kafka-python.

It shares pipeline's run id, Kafka, Redis and client_id ("pipe-<run>"), so the
PipelineRun helpers (seen, extra, committed, dead_letters) read what it records, and
has its own Celery app and queue. Every perform() counts "<partition>:<offset>" in
"<run>:seen:<topic>" and describes the message it got in "<run>:extra:<topic>".
"""

from __future__ import annotations

import json

from celery import Celery

from kbridge import BaseConsumer, KBridge
from kbridge.testing.kafka import FAST_GROUP
from tests.apps.pipeline import BROKER_URL, CELERY_CONF, KAFKA, RUN, store

QUEUE = f"kbridge-foreign-{RUN}"

celery_app = Celery("foreign", broker=BROKER_URL)
celery_app.conf.update(CELERY_CONF, task_default_queue=QUEUE)

app = KBridge(
    client_id=f"pipe-{RUN}",
    kafka={"bootstrap_servers": KAFKA, **FAST_GROUP},
    celery=celery_app,
    enqueue_backoff_max=2.0,  # an undecodable batch is fetched again every couple of seconds
)


class Describing(BaseConsumer):
    """Records what perform() saw: payload kind and size, key and headers, to compare with what was sent."""

    def perform(self) -> None:
        pipe = store().pipeline()
        for p in self.params_batch:
            where = f"{p.partition}:{p.offset}"
            payload = p.payload
            seen = {
                "payload_none": payload is None,
                "raw_none": p.raw_payload is None,
                "raw_len": None if p.raw_payload is None else len(p.raw_payload),
                "n": payload.get("n") if isinstance(payload, dict) else None,
                "key": None if p.key is None else p.key.decode(),
                "headers": [[k, None if v is None else v.decode()] for k, v in p.header_list],
            }
            pipe.hincrby(f"{RUN}:seen:{p.topic}", where, 1)
            pipe.hset(f"{RUN}:extra:{p.topic}", where, json.dumps(seen))
        pipe.execute()


for name in ("codecs", "headers", "corrupt"):
    app.topic(f"{RUN}.{name}", consumer=Describing)
