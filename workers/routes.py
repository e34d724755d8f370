"""The KBridge app: which topic goes to which consumer. `kbridge listen --app workers:kbridge_app`."""

from __future__ import annotations

from kbridge import KBridge

from .celery import app as celery_app
from .consumers import EventsConsumer
from .settings import KAFKA_BOOTSTRAP

kbridge_app = KBridge(
    client_id="workers",
    # Short session and heartbeat: a restarted listener rejoins in seconds instead of ~20 s.
    kafka={"bootstrap_servers": KAFKA_BOOTSTRAP, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
    celery=celery_app,
)

with kbridge_app.consumer_group("events") as group:  # Kafka group id "workers_events"
    group.topic("events", consumer=EventsConsumer)
