"""The files `kbridge install` writes, as str.format templates ({package}, {topic}, {group}, {consumer}).

They are plain Python strings rather than package data so an installed kbridge
needs no data files; literal braces in the generated code are doubled.
"""

from __future__ import annotations

INIT = '''\
"""{package}: Kafka topic "{topic}" -> {consumer} on Celery workers.

Importing the package loads the Celery app *and* the routes, so a plain
`celery -A {package} worker` has the kbridge.perform task and knows every route,
and `kbridge listen --app {package}:kbridge_app` finds the app.
"""

from .celery import app as celery_app
from .routes import kbridge_app

__all__ = ["celery_app", "kbridge_app"]
'''

SETTINGS = '''\
"""Where this app finds its services: environment variables, with defaults for local ones.

The listener and the workers import the same settings, so they always agree on
the Kafka cluster and the Celery broker.
"""

from __future__ import annotations

import os

# Any kafka-python client setting can go into KBridge(kafka=...) in routes.py; this is the one that varies most.
KAFKA_BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
# Celery itself reads CELERY_BROKER_URL too, and it wins over broker=, so there is one source of truth.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
'''

CELERY = '''\
"""The Celery app, in Django's usual `proj/celery.py` place, so `celery -A {package} worker` finds it."""

from __future__ import annotations

from celery import Celery

from .settings import CELERY_BROKER_URL

app = Celery("{package}", broker=CELERY_BROKER_URL)
app.conf.update(
    # kbridge sends JSON only; accepting nothing else keeps pickle out of the workers.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Nothing reads task results: Kafka offsets and perform()'s own side effects are the record.
    task_ignore_result=True,
    # Wait for the broker instead of crashing while it is down.
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    # kbridge tasks are acks_late: fetching one task at a time keeps unacked work from piling up in one
    # process, and Redis redelivers a task not acked within visibility_timeout, so keep it above your
    # longest topic timeout.
    worker_prefetch_multiplier=1,
    broker_transport_options={{"visibility_timeout": 3600}},
)
'''

CONSUMERS = '''\
"""{consumer}: its filter runs in the listener, perform() in a Celery worker."""

from __future__ import annotations

import logging

from kbridge import BaseConsumer, before_enqueue

log = logging.getLogger(__name__)


class {consumer}(BaseConsumer):
    @before_enqueue
    def not_a_heartbeat(self) -> bool:
        """Falsy: the message is not enqueued, and its offset is committed all the same."""
        payload = self.params.payload
        return not (isinstance(payload, dict) and payload.get("type") == "heartbeat")

    def perform(self) -> None:
        """Delivery is at least once, so this can run twice for one message: keep it idempotent."""
        params = self.params
        log.info("performed %s-%d@%d: %s", params.topic, params.partition, params.offset, params.payload)

    def after_failure(self, exc: BaseException) -> None:
        """Called on any failure of perform(), timeouts included; then the task is retried."""
        log.warning("%s-%d@%d failed: %r", self.params.topic, self.params.partition, self.params.offset, exc)
'''

ROUTES = '''\
"""The KBridge app: which topic goes to which consumer. `kbridge flow --app {package}:kbridge_app` shows it."""

from __future__ import annotations

from kbridge import KBridge

from .celery import app as celery_app
from .consumers import {consumer}
from .settings import KAFKA_BOOTSTRAP_SERVERS

kbridge_app = KBridge(
    client_id="{package}",
    kafka={{"bootstrap_servers": KAFKA_BOOTSTRAP_SERVERS}},  # passed to kafka-python: add SASL/SSL settings here
    celery=celery_app,
)

with kbridge_app.consumer_group("{group}") as group:  # Kafka group id "{package}_{group}"
    # Options: queue=, timeout=, max_retries=, batch_consuming=, dead_letter_topic=, deserializer=, ...
    group.topic("{topic}", consumer={consumer})
'''

PRODUCE = '''\
"""Send example events to "{topic}": `python -m {package}.produce [COUNT]` (default 10).

Every 5th event is a heartbeat, which {consumer}'s filter drops in the listener.
"""

from __future__ import annotations

import json
import sys

from kafka import KafkaProducer

from .settings import KAFKA_BOOTSTRAP_SERVERS

TOPIC = "{topic}"


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 10
    producer = KafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP_SERVERS, acks="all")
    try:
        for i in range(1, count + 1):
            event = {{"type": "heartbeat" if i % 5 == 0 else "signup", "id": i}}
            sent = producer.send(TOPIC, value=json.dumps(event).encode()).get(timeout=30)
            print(f"sent {{json.dumps(event)}} to {{sent.topic}}-{{sent.partition}}@{{sent.offset}}")
    finally:
        producer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''

FILES = {
    "__init__.py": (INIT, "imports both apps, so `celery -A` and `--app` find them"),
    "settings.py": (SETTINGS, "KAFKA_BOOTSTRAP_SERVERS and CELERY_BROKER_URL, with local defaults"),
    "celery.py": (CELERY, "the Celery app"),
    "consumers.py": (CONSUMERS, "the example consumer: a filter and perform()"),
    "routes.py": (ROUTES, "the KBridge app and its routes"),
    "produce.py": (PRODUCE, "sends example events"),
}
