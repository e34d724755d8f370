"""Typed payloads and tracing against the real broker, Redis, a `kbridge listen` and a prefork `celery worker`.

tests/apps/typed_app.py routes four topics in one consumer group. Invalid payloads must be
dead-lettered at once with their field paths in the headers, valid ones performed as model
instances; a trace started by a confluent-kafka producer must continue through the
listener and the worker into a span perform() starts, as one tree.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer as ConfluentProducer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kbridge.dlq import ATTEMPTS, ERROR_CLASS, ORIGIN_OFFSET, VALIDATION_ERRORS
from kbridge.testing import processes
from kbridge.testing.kafka import create_topics, read_topic, wait_until
from kbridge.testing.services import KafkaService, RedisService
from tests.apps import span_file

pytestmark = pytest.mark.integration

APP = "tests.apps.typed_app:app"
CELERY_APP = "tests.apps.typed_app:celery_app"
TOPICS = ("orders", "shipments", "events", "traced")


class TypedRun:
    def __init__(self, kafka: KafkaService, redis_url: str, trace_file: Path) -> None:
        self.run = uuid.uuid4().hex[:8]
        self.kafka = kafka
        self.redis_url = redis_url
        self.trace_file = trace_file
        self.env = {"TYPED_RUN": self.run, "TYPED_KAFKA": kafka.bootstrap, "TYPED_REDIS": redis_url,
                    "TYPED_TRACE_FILE": str(trace_file)}

    def topic(self, name: str) -> str:
        return f"{self.run}.{name}"

    def produce(self, name: str, values: list[Any], headers: list[tuple[str, bytes]] | None = None) -> None:
        """With confluent-kafka (librdkafka), as most production producers are not kafka-python."""
        producer = ConfluentProducer({"bootstrap.servers": self.kafka.bootstrap, "linger.ms": 5})
        for value in values:
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            producer.produce(self.topic(name), raw, headers=headers)
        assert producer.flush(30) == 0

    def performed(self, name: str) -> dict[int, str]:
        raw = redis.Redis.from_url(self.redis_url).hgetall(f"{self.run}:typed:{self.topic(name)}")
        return {int(k): v.decode() for k, v in raw.items()}


@pytest.fixture(scope="module")
def typed(kbridge_kafka: KafkaService, kbridge_redis: RedisService,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[TypedRun]:
    run = TypedRun(kbridge_kafka, kbridge_redis.url, tmp_path_factory.mktemp("spans") / "spans.jsonl")
    create_topics(kbridge_kafka.bootstrap, [run.topic(t) for t in TOPICS] + [f"{run.topic(t)}.dlq" for t in TOPICS])
    worker = processes.celery_worker(CELERY_APP, run.env, [f"kbridge-typed-{run.run}"], name="typed-worker").start()
    listener = processes.listener(APP, run.env, name="typed-listener").start()
    try:
        worker.wait_for_log("ready.", timeout=60)
        yield run
    finally:
        listener.stop()
        worker.stop()


def _letters(run: TypedRun, name: str, count: int) -> dict[int, dict[str, bytes]]:
    letters = read_topic(run.kafka.bootstrap, f"{run.topic(name)}.dlq", count, timeout=60)
    by_offset = {}
    for letter in letters:
        headers = dict(letter.headers)
        by_offset[int(headers[ORIGIN_OFFSET])] = headers
    return by_offset


def test_invalid_payloads_are_dead_lettered_at_once_with_field_paths_and_valid_ones_arrive_as_models(
    typed: TypedRun,
) -> None:
    started = time.monotonic()
    typed.produce("orders", [
        {"id": 1, "lines": [{"sku": "tea", "quantity": 2}]},
        {"id": 2, "lines": [{"sku": "cup", "quantity": 0}]},  # quantity must be > 0
        {"id": "three", "lines": [{"quantity": 1}]},  # id not an int, sku missing
        {"id": 4, "lines": [{"sku": "pot", "quantity": 1}]},
    ])
    typed.produce("shipments", [
        {"id": 10, "to": {"city": "Oslo", "zip": "0150"}, "parcels": [1.5, 2]},
        {"id": 11, "to": {"city": "Bergen"}, "parcels": [1.0]},  # to.zip missing
        {"id": 12, "to": {"city": "Tromsø", "zip": "9008"}, "parcels": [1, "heavy"]},  # parcels.1 not a number
    ])
    typed.produce("events", [{"kind": "signup", "at": 1}, {"kind": "login", "at": "noon"}])

    wait_until(lambda: len(typed.performed("orders")) == 2 and len(typed.performed("shipments")) == 1
               and len(typed.performed("events")) == 1, 90, what="valid payloads performed")
    assert typed.performed("orders") == {0: "Order|1:teax2", 3: "Order|4:potx1"}
    assert typed.performed("shipments") == {0: "Shipment|10:Address:Oslo:3.5"}
    assert typed.performed("events") == {0: "Event|signup"}

    orders = _letters(typed, "orders", 2)
    assert sorted(orders) == [1, 2]
    for headers in orders.values():  # in the listener: the filter read the payload
        assert headers[ERROR_CLASS] == b"kbridge.errors.PayloadValidationError"
        assert headers[ATTEMPTS] == b"1"
    assert [e["path"] for e in json.loads(orders[1][VALIDATION_ERRORS])] == ["lines.0.quantity"]
    assert {e["path"] for e in json.loads(orders[2][VALIDATION_ERRORS])} == {"id", "lines.0.sku"}

    shipments = _letters(typed, "shipments", 2)  # in the worker, at once: max_retries=2 is not used
    assert sorted(shipments) == [1, 2]
    assert [(e["path"], e["message"]) for e in json.loads(shipments[1][VALIDATION_ERRORS])] == [
        ("to.zip", "Field required")]
    assert [e["path"] for e in json.loads(shipments[2][VALIDATION_ERRORS])] == ["parcels.1"]
    assert all(h[ATTEMPTS] == b"1" for h in shipments.values())

    events = _letters(typed, "events", 1)
    assert [e["path"] for e in json.loads(events[1][VALIDATION_ERRORS])] == ["at"]
    print(f"[typed] performed 4 valid, dead-lettered 5 invalid in {time.monotonic() - started:.1f}s")


def test_a_producers_trace_continues_through_listener_and_worker_into_perform(typed: TypedRun) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # the test's own, not the global one: other tests keep tracing off
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test producer").start_as_current_span("send traced", kind=SpanKind.PRODUCER) as span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    producer_span = span.get_span_context()
    trace_id, producer_id = f"{producer_span.trace_id:032x}", f"{producer_span.span_id:016x}"
    typed.produce("traced", [{"n": 1}], headers=[(k, v.encode()) for k, v in carrier.items()])
    typed.produce("traced", [{"n": 2}])  # no trace context: a new trace

    wait_until(lambda: len(typed.performed("traced")) == 2, 90, what="traced messages performed")
    seen = typed.performed("traced")
    assert seen[0] == f"dict|{trace_id}:{trace_id}"  # perform's current span, and the user's span, in that trace

    def tree() -> dict[str, dict[str, Any]] | None:
        spans = [s for s in span_file.read(str(typed.trace_file)) if s["trace_id"] == trace_id]
        named = {s["name"]: s for s in spans}
        return named if {"receive " + typed.topic("traced"), "process " + typed.topic("traced"),
                         "user work"} <= set(named) else None

    wait_until(lambda: tree() is not None, 30, what="the trace's spans exported")
    spans = tree()
    assert spans is not None
    receive, process, user = (spans["receive " + typed.topic("traced")], spans["process " + typed.topic("traced")],
                              spans["user work"])
    assert receive["parent"] == producer_id  # producer -> listener
    assert process["parent"] == receive["span_id"]  # listener -> worker, through the task message's headers
    assert user["parent"] == process["span_id"]  # worker -> the user's span in perform()
    assert receive["pid"] != process["pid"]
    assert receive["kind"] == "CONSUMER" and process["kind"] == "CONSUMER"
    for s in (receive, process):
        attributes = s["attributes"]
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.destination.name"] == typed.topic("traced")
        assert attributes["messaging.destination.partition.id"] == "0"
        assert attributes["messaging.kafka.message.offset"] == 0
        assert attributes["messaging.consumer.group.name"] == f"typed-{typed.run}_typed"
    assert process["attributes"]["messaging.message.id"]  # the Celery task id
    assert process["attributes"]["kbridge.celery.task_id"] == process["attributes"]["messaging.message.id"]

    other_trace = seen[1].split("|")[1].split(":")[0]
    assert other_trace != trace_id
    others = [s for s in span_file.read(str(typed.trace_file)) if s["trace_id"] == other_trace]
    assert {s["name"]: s["parent"] for s in others}.get("receive " + typed.topic("traced"), "missing") is None
    print(f"[traced] producer {producer_id} -> receive {receive['span_id']} -> process {process['span_id']} "
          f"-> user {user['span_id']} in trace {trace_id}")
