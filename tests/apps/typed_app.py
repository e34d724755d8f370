"""The app tests/integration/test_typed_and_traced.py runs: typed payloads and tracing, on real services.

- orders: a pydantic model, read by a before_enqueue filter, so validation happens in the listener;
- shipments: nested dataclasses, read only in perform(), so validation happens in the worker;
- events: a msgspec Struct;
- traced: perform() starts a span of its own and records the trace it ran in.

perform() records "<offset>" -> "<payload class>|<detail>" in a Redis hash per topic.
"""

from __future__ import annotations

import dataclasses
import os

import msgspec
import pydantic
import redis
from celery import Celery
from opentelemetry import trace

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.testing.kafka import FAST_GROUP

RUN = os.environ.get("TYPED_RUN", "local")
KAFKA = os.environ.get("TYPED_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("TYPED_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = f"kbridge-typed-{RUN}"
TRACE_FILE = os.environ.get("TYPED_TRACE_FILE")

if TRACE_FILE:
    from tests.apps import span_file

    span_file.install(TRACE_FILE)

celery_app = Celery("typed", broker=REDIS_URL)
celery_app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True,
                       worker_hijack_root_logger=False)

app = KBridge(client_id=f"typed-{RUN}", kafka={"bootstrap_servers": KAFKA, **FAST_GROUP}, celery=celery_app)

_redis: redis.Redis | None = None


def record(consumer: BaseConsumer, detail: str) -> None:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(REDIS_URL)
    payload = consumer.params.payload
    _redis.hset(f"{RUN}:typed:{consumer.params.topic}", str(consumer.params.offset),
                f"{type(payload).__qualname__}|{detail}")


class Line(pydantic.BaseModel):
    sku: str
    quantity: int = pydantic.Field(gt=0)


class Order(pydantic.BaseModel):
    id: int
    lines: list[Line]


class OrdersConsumer(BaseConsumer):
    @before_enqueue
    def has_lines(self) -> bool:
        return bool(self.params.payload.lines)

    def perform(self) -> None:
        order = self.params.payload
        record(self, f"{order.id}:{order.lines[0].sku}x{order.lines[0].quantity}")


@dataclasses.dataclass
class Address:
    city: str
    zip: str


@dataclasses.dataclass
class Shipment:
    id: int
    to: Address
    parcels: list[float]


class ShipmentsConsumer(BaseConsumer):
    def perform(self) -> None:
        shipment = self.params.payload
        record(self, f"{shipment.id}:{type(shipment.to).__qualname__}:{shipment.to.city}:{sum(shipment.parcels)}")


class Event(msgspec.Struct):
    kind: str
    at: int


class EventsConsumer(BaseConsumer):
    def perform(self) -> None:
        record(self, self.params.payload.kind)


class TracedConsumer(BaseConsumer):
    def perform(self) -> None:
        outer = trace.get_current_span().get_span_context()
        with trace.get_tracer("typed_app").start_as_current_span("user work") as span:
            inner = span.get_span_context()
        record(self, f"{outer.trace_id:032x}:{inner.trace_id:032x}")


with app.consumer_group("typed") as group:
    group.topic(f"{RUN}.orders", consumer=OrdersConsumer, payload_model=Order, max_retries=2)
    group.topic(f"{RUN}.shipments", consumer=ShipmentsConsumer, payload_model=Shipment, max_retries=2)
    group.topic(f"{RUN}.events", consumer=EventsConsumer, payload_model=Event, max_retries=2)
    group.topic(f"{RUN}.traced", consumer=TracedConsumer)
