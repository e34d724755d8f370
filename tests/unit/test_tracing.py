"""Tracing: the listener step and the perform stage, driven through TestClient with an in-memory exporter.

The tests never set the global tracer provider (it can be set once per process, and other
tests run with tracing off); they make kbridge's tracer one of their own provider's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kbridge import BaseConsumer, KBridge, Params
from kbridge.backends.celery import redis_pipeline
from kbridge.backends.celery.publisher import CeleryBackend
from kbridge.instrumentation import tracing
from kbridge.interchange import to_wire
from kbridge.listener.steps import StepContext, build_chain
from kbridge.listener.steps.tracing import TracingStep
from kbridge.perform import build_runner
from kbridge.perform.tracing import TracingStage
from kbridge.producer import Producer
from kbridge.testing import TestClient


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "enabled", lambda: True)
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer("kbridge"))
    yield exporter


def producer_headers(provider: TracerProvider) -> tuple[dict[str, bytes], trace.SpanContext]:
    with provider.get_tracer("producer").start_as_current_span("send") as span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    return {k: v.encode() for k, v in carrier.items()}, span.get_span_context()


user_traces: list[int] = []


class Traced(BaseConsumer):
    def perform(self) -> None:
        with trace.get_tracer("user").start_as_current_span("user work") as span:
            user_traces.append(span.get_span_context().trace_id)


def make_client(backend: str, **options: Any) -> TestClient:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"},
                  celery=Celery("t", broker="memory://"))
    app.topic("orders", consumer=Traced, backend=backend, **options)
    return TestClient(app)


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


@pytest.mark.parametrize("backend", ["celery", "inline"])
def test_a_message_trace_continues_into_the_listener_the_worker_and_perform(
    spans: InMemorySpanExporter, backend: str
) -> None:
    provider = TracerProvider()
    headers, producer = producer_headers(provider)
    user_traces.clear()
    make_client(backend).publish("orders", {"n": 1}, headers=headers)
    found = by_name(spans)
    receive, process = found["receive orders"], found["process orders"]
    assert receive.parent is not None and receive.parent.span_id == producer.span_id
    assert process.parent is not None and process.parent.span_id == receive.context.span_id
    assert {s.context.trace_id for s in found.values()} == {producer.trace_id}
    assert user_traces == [producer.trace_id]
    assert receive.kind == trace.SpanKind.CONSUMER
    assert dict(receive.attributes or {}) == {
        "messaging.system": "kafka", "messaging.operation.type": "receive", "messaging.operation.name": "receive",
        "messaging.destination.name": "orders", "messaging.destination.partition.id": "0",
        "messaging.kafka.destination.partition": 0, "messaging.kafka.message.offset": 0,
        "messaging.consumer.group.name": "shop_orders", "messaging.kafka.consumer.group": "shop_orders",
        "kbridge.route": "shop_orders/orders", "kbridge.backend": backend,
    }
    assert process.attributes is not None and process.attributes["kbridge.attempt"] == 1


def test_a_message_without_a_trace_starts_one(spans: InMemorySpanExporter) -> None:
    make_client("celery").publish("orders", {"n": 1})
    found = by_name(spans)
    assert found["receive orders"].parent is None
    assert found["process orders"].parent is not None
    assert found["process orders"].context.trace_id == found["receive orders"].context.trace_id


def test_a_batch_links_every_messages_context(spans: InMemorySpanExporter) -> None:
    provider = TracerProvider()
    first, first_span = producer_headers(provider)
    second, second_span = producer_headers(provider)
    client = make_client("celery", batch_consuming=True)
    client.publish_many("orders", [{"n": 1}], headers=first)
    spans.clear()
    client.publish_many("orders", [{"n": 1}, {"n": 2}, {"n": 3}], headers=second)
    found = by_name(spans)
    receive, process = found["receive orders"], found["process orders"]
    assert [link.context.span_id for link in receive.links] == [second_span.span_id] * 3
    assert [link.context.span_id for link in process.links] == [second_span.span_id] * 3
    assert process.parent is not None and process.parent.span_id == receive.context.span_id
    assert receive.attributes is not None and receive.attributes["messaging.batch.message_count"] == 3
    assert first_span.trace_id != second_span.trace_id


def test_a_failed_attempt_is_recorded_on_the_worker_span(spans: InMemorySpanExporter) -> None:
    class Failing(BaseConsumer):
        def perform(self) -> None:
            raise ValueError("boom")

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"}, celery=Celery("t"))
    app.topic("orders", consumer=Failing, max_retries=1)
    TestClient(app).publish("orders", {"n": 1})
    processes = [s for s in spans.get_finished_spans() if s.name == "process orders"]
    assert [s.attributes["kbridge.attempt"] for s in processes if s.attributes] == [1, 2]
    assert all(s.status.status_code == trace.StatusCode.ERROR for s in processes)
    assert all(e.name == "exception" for s in processes for e in s.events)


def test_nothing_is_assembled_when_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tracing.enabled()  # no tracer provider set in this process
    monkeypatch.setenv("KBRIDGE_TRACING", "off")
    assert not tracing.enabled() and tracing.state() == "off (KBRIDGE_TRACING=off)"
    monkeypatch.delenv("KBRIDGE_TRACING")
    assert tracing.state() == "off (no OpenTelemetry tracer provider set)"
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"})
    route = app.topic("orders", consumer=Traced, backend="inline")
    from kbridge.listener.offsets import OffsetTracker
    from kbridge.listener.processor import Stats
    from kbridge.runtime import Runtime

    chain = build_chain(StepContext("g", Runtime.of(app), Stats(), OffsetTracker()), lambda name: route)
    step: Any = chain.head.entry(route)
    while step is not None:
        assert not isinstance(step, TracingStep)
        step = step.next
    runner = build_runner(Runtime.of(app).dead_letters, enforce_timeout=True)
    assert not any(isinstance(s, TracingStage) for s in runner.stages)


def test_produce_and_responders_inject_the_current_context() -> None:
    sent: list[Any] = []

    class Client:
        def __init__(self, **config: Any) -> None: ...

        def send(self, topic: str, **kwargs: Any) -> Any:
            from kafka.future import Future

            sent.append(kwargs["headers"])
            return Future()

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"})
    producer = Producer(app.settings, app.monitor, Client)
    producer.produce_async("out", {"a": 1})  # no current span: nothing added
    with TracerProvider().get_tracer("t").start_as_current_span("perform") as span:
        producer.produce_async("out", {"a": 1}, headers={"x": "1"})
        producer.produce_async("out", {"a": 1}, headers={"traceparent": "mine"})  # the caller's own wins
    assert sent[0] == []
    assert sent[1][0] == ("x", b"1")
    name, value = sent[1][1]
    assert name == "traceparent" and f"{span.get_span_context().trace_id:032x}" in value.decode()
    assert sent[2] == [("traceparent", b"mine")]


def test_the_task_message_carries_the_trace_headers_and_the_worker_reads_them() -> None:
    request = SimpleNamespace(id="task-1", traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01", tracestate="x=1")
    assert tracing.task_carrier(request) == {"traceparent": request.traceparent, "tracestate": "x=1", "id": "task-1"}
    assert tracing.task_carrier(SimpleNamespace(id="task-2")) is None
    assert tracing.task_carrier(SimpleNamespace(id="t", traceparent="0" * 1000)) is None  # forged: ignored
    assert tracing.outgoing({"traceparent": "p", "id": "t"}) == {"traceparent": "p"}

    publisher = redis_pipeline.RedisPipelinePublisher.__new__(redis_pipeline.RedisPipelinePublisher)
    publisher.origin, publisher.reply_to, publisher._templates = "o", "r", {}
    message = json.loads(publisher.message("id1", "kbridge.perform", "q", "g/t", ["g/t", []], 70, 60))
    assert "traceparent" not in message["headers"]  # the wire format of untraced tasks is unchanged


def test_apply_async_puts_the_carrier_in_the_task_message_headers_not_its_arguments() -> None:
    celery_app = Celery("t", broker="memory://")  # not Redis: Celery's own apply_async path
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"}, celery=celery_app)
    route = app.topic("orders", consumer=Traced)
    message = Params(topic="orders", partition=0, offset=0, raw_payload=b"{}")
    untraced = Params(topic="orders", partition=0, offset=1, raw_payload=b"{}")
    parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    message.carrier = {"traceparent": parent, "id": "listener-side"}
    backend = CeleryBackend(celery_app, 60)
    backend.enqueue(route, [message])
    backend.enqueue(route, [untraced])
    with celery_app.connection_for_read() as conn:
        queue = conn.SimpleQueue(celery_app.conf.task_default_queue)
        first, second = queue.get(timeout=5), queue.get(timeout=5)
        queue.close()
    assert first.headers["traceparent"] == parent and first.headers["id"] != "listener-side"
    assert first.payload[0] == ["shop_orders/orders", [to_wire(message)]]
    assert "traceparent" not in second.headers


def test_without_opentelemetry_everything_works_and_nothing_imports_it() -> None:
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        sys.modules["opentelemetry"] = None  # as if not installed: every import of it fails
        from celery import Celery
        from kbridge import BaseConsumer, KBridge, produce
        from kbridge.instrumentation import tracing
        from kbridge.testing import TestClient

        class Orders(BaseConsumer):
            def perform(self):
                assert self.params.payload == {"n": 1}

        app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"}, celery=Celery("t"))
        app.topic("orders", consumer=Orders)
        result = TestClient(app).publish("orders", {"n": 1},
                                         headers={"traceparent": b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"})
        assert len(result.performed) == 1 and not result.dead_lettered
        assert not tracing.installed() and not tracing.enabled()
        assert tracing.state().startswith("off (opentelemetry not installed")
        headers = []
        tracing.inject(headers)
        assert headers == []
        assert not [m for m in sys.modules if m.startswith("opentelemetry.")]
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
