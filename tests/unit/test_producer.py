"""kbridge.producer: encoding, sync/async produce, flush, errors, events and fork safety, with a fake KafkaProducer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.signals import worker_process_shutdown
from kafka.errors import KafkaTimeoutError
from kafka.future import Future as KafkaFuture
from kafka.producer.future import RecordMetadata

import kbridge
import kbridge.producer
from kbridge import KBridge, KBridgeError, PrefixMapper, ProduceError
from kbridge.errors import ConfigError
from kbridge.producer import Delivery, Producer, encode

KAFKA = {"bootstrap_servers": "x:1"}


class FakeFuture(KafkaFuture):
    """kafka-python's future plus get(), as FutureRecordMetadata has (DeadLetters waits with it)."""

    def get(self, timeout: float | None = None) -> Any:
        assert self.is_done, "the fake acks at once unless the topic is held"
        if self.exception is not None:
            raise self.exception
        return self.value


class FakeKafkaProducer:
    """Records sends. Acks at once unless the topic is held (then on flush), or fails it with fail[topic]."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[dict[str, Any]] = []
        self.held: set[str] = set()
        self.fail: dict[str, BaseException] = {}
        self.refuse: dict[str, BaseException] = {}  # raised by send() itself
        self.pending: list[tuple[KafkaFuture, RecordMetadata]] = []
        self.closed = False
        self.flushed = 0

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None, partition: Any = None) -> Any:
        if topic in self.refuse:
            raise self.refuse[topic]
        offset = sum(1 for s in self.sent if s["topic"] == topic)
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers, "partition": partition})
        future = FakeFuture()
        md = RecordMetadata(topic, partition or 0, None, offset, -1, None, 0, 0, 0)
        if topic in self.fail:
            future.failure(self.fail[topic])
        elif topic in self.held:
            self.pending.append((future, md))
        else:
            future.success(md)
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flushed += 1
        for future, md in self.pending:
            future.success(md)
        self.pending = []

    def close(self, timeout: float | None = None) -> None:
        self.flush()
        self.closed = True


class Factory:
    """Builds FakeKafkaProducers and remembers them (one per process, so normally one)."""

    def __init__(self) -> None:
        self.made: list[FakeKafkaProducer] = []

    def __call__(self, **config: Any) -> FakeKafkaProducer:
        self.made.append(FakeKafkaProducer(**config))
        return self.made[-1]

    @property
    def client(self) -> FakeKafkaProducer:
        return self.made[-1]


def fake_app(client_id: str = "unit", **settings: Any) -> tuple[KBridge, Factory]:
    """A configured app whose producer builds fakes; the fake exists after the first send."""
    app = KBridge(client_id=client_id, kafka=KAFKA, **settings)
    factory = Factory()
    app.producer = Producer(app.settings, app.monitor, factory)
    return app, factory


@pytest.fixture(autouse=True)
def _no_real_kafka_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**config: Any) -> None:
        raise AssertionError("a unit test tried to create a real KafkaProducer; give Producer a fake factory")

    monkeypatch.setattr(kbridge.producer, "KafkaProducer", refuse)


# -- encoding ---------------------------------------------------------------------------------------


def test_json_is_the_default_and_bytes_pass_through_untouched() -> None:
    assert encode("t", {"a": "ż", "n": [1, 2]}).value == '{"a":"ż","n":[1,2]}'.encode()
    raw = b"\xff\x00not json"
    assert encode("t", raw).value == raw
    assert encode("t", bytearray(raw)).value == raw
    assert encode("t", raw, serializer=lambda v: b"never called").value == raw


def test_a_serializer_replaces_json() -> None:
    def upper(value: Any) -> bytes:
        return str(value).upper().encode()

    message = encode("t", "hello", key="k", headers={"h": "v", "b": b"\x01"}, partition=2, serializer=upper)
    assert (message.value, message.key, message.headers, message.partition) == (
        b"HELLO", b"k", (("h", b"v"), ("b", b"\x01")), 2,
    )
    assert encode("t", 1, headers=[("h", b"1"), ("h", "2")]).headers == (("h", b"1"), ("h", b"2"))


def test_none_is_a_tombstone_and_needs_a_key() -> None:
    assert encode("t", None, key=b"k").value is None
    with pytest.raises(ProduceError, match="tombstone and needs a key"):
        encode("t", None)


def test_every_encoding_problem_is_reported_at_once_naming_the_topic() -> None:
    def broken(value: Any) -> bytes:
        raise ValueError("cannot")

    with pytest.raises(ProduceError) as info:
        encode("bad topic", {"x": 1}, key=5, headers={"h": 3}, partition=-1, serializer=broken)  # type: ignore[arg-type, dict-item]
    text = str(info.value)
    assert text.startswith("could not produce to topic 'bad topic'")
    for part in ("topic name 'bad topic' is invalid", "broken cannot serialize the payload: ValueError: cannot",
                 "key must be str, bytes or None, got int", "header 'h' must be str or bytes",
                 "partition must be an integer >= 0"):
        assert part in text


def test_a_serializer_must_return_bytes() -> None:
    with pytest.raises(ProduceError, match="returned str, not bytes"):
        encode("t", {"x": 1}, serializer=json.dumps)  # type: ignore[arg-type]
    with pytest.raises(ProduceError, match="cannot serialize the payload: TypeError"):
        encode("t", {"x": object()})


# -- producing ---------------------------------------------------------------------------------------


def test_produce_waits_for_the_ack_and_reports_where_it_landed() -> None:
    app, factory = fake_app(topic_mapper=PrefixMapper("acme."))
    delivery = app.produce("orders", {"id": 1}, key="o-1", headers={"source": "unit"})
    assert delivery == Delivery(topic="orders", kafka_topic="acme.orders", partition=0, offset=0)
    assert factory.client.sent == [{
        "topic": "acme.orders", "value": b'{"id":1}', "key": b"o-1", "headers": [("source", b"unit")],
        "partition": None,
    }]


def test_the_client_gets_the_apps_kafka_settings_with_acks_all_by_default() -> None:
    app, factory = fake_app(produce_timeout=7)
    app.produce("t", 1)
    assert factory.client.config == {
        "acks": "all", "max_block_ms": 7000, "bootstrap_timeout_ms": 7000, "client_id": "unit",
        "bootstrap_servers": "x:1",
    }
    other = KBridge(client_id="unit2", kafka={**KAFKA, "acks": 1, "max_block_ms": 100})
    made = Factory()
    other.producer = Producer(other.settings, factory=made)
    other.produce("t", 1)
    assert made.client.config["acks"] == 1 and made.client.config["max_block_ms"] == 100


def test_a_refused_send_is_a_produce_error_naming_topic_kafka_topic_and_cause() -> None:
    app, factory = fake_app(topic_mapper=PrefixMapper("acme."))
    app.produce("warmup", 1)
    factory.client.refuse["acme.orders"] = ValueError("Unrecognized partition 9 for topic acme.orders")
    with pytest.raises(ProduceError) as info:
        app.produce("orders", {"id": 1}, partition=9)
    assert str(info.value) == (
        "could not produce to topic 'orders' (Kafka topic 'acme.orders'): "
        "ValueError: Unrecognized partition 9 for topic acme.orders"
    )
    assert isinstance(info.value.__cause__, ValueError)
    assert (info.value.topic, info.value.kafka_topic) == ("orders", "acme.orders")


def test_a_failed_delivery_and_a_missing_ack_are_produce_errors() -> None:
    app, factory = fake_app()
    app.produce("warmup", 1)
    factory.client.fail["orders"] = KafkaTimeoutError("Batch expired")
    with pytest.raises(ProduceError, match="'orders': KafkaTimeoutError: Batch expired$"):
        app.produce("orders", 1)
    factory.client.held.add("slow")
    with pytest.raises(ProduceError, match="no acknowledgement from Kafka within 0.05s; it may still arrive"):
        app.producer.produce("slow", 1, timeout=0.05)


def test_produce_async_returns_a_future_that_flush_completes() -> None:
    app, factory = fake_app()
    app.produce("warmup", 1)
    factory.client.held.add("events")
    futures = [app.produce_async("events", {"n": n}, key=str(n)) for n in range(3)]
    assert not any(f.done() for f in futures)
    assert not futures[0].cancel()  # handed to Kafka: it cannot be called back
    app.flush()
    assert [f.result(0).offset for f in futures] == [0, 1, 2]
    assert [s["value"] for s in factory.client.sent[1:]] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


def test_an_async_failure_lands_on_the_future_not_the_caller() -> None:
    app, factory = fake_app()
    app.produce("warmup", 1)
    factory.client.refuse["gone"] = KafkaTimeoutError("Failed to update metadata after 30.0 secs.")
    future = app.produce_async("gone", 1)
    with pytest.raises(ProduceError, match="'gone': KafkaTimeoutError"):
        future.result(0)
    with pytest.raises(ProduceError, match="cannot serialize"):  # nothing sent: raised at once
        app.produce_async("gone", {1, 2})


def test_flush_before_any_send_is_a_no_op_and_close_flushes() -> None:
    app, factory = fake_app()
    app.flush()
    assert factory.made == []
    app.produce("warmup", 1)
    factory.client.held.add("held")
    future = app.produce_async("held", 1)
    app.producer.close()
    assert future.result(0).offset == 0 and factory.client.closed


def test_produce_events_reach_the_monitor() -> None:
    app, factory = fake_app()
    seen: list[tuple[str, dict[str, Any]]] = []
    app.monitor.subscribe("produce", lambda e, p: seen.append((e, p)))
    app.monitor.subscribe("produce.failed", lambda e, p: seen.append((e, p)))
    app.produce("ok", 1)
    factory.client.fail["bad"] = KafkaTimeoutError("expired")
    with pytest.raises(ProduceError):
        app.produce("bad", 1)
    assert seen == [
        ("produce", {"topic": "ok", "partition": 0, "offset": 0}),
        ("produce.failed", {"topic": "bad", "error": "KafkaTimeoutError: expired"}),
    ]


def test_a_forked_child_builds_its_own_client_and_never_closes_the_parents(monkeypatch: pytest.MonkeyPatch) -> None:
    app, factory = fake_app()
    app.produce("t", 1)
    parent = factory.client
    monkeypatch.setattr(kbridge.producer.os, "getpid", lambda: -1)  # as if in a prefork child
    assert not app.producer.created
    app.flush()  # nothing of this process to flush; the parent's buffer is not ours
    assert parent.flushed == 0
    app.produce("t", 2)
    assert len(factory.made) == 2 and factory.client is not parent
    monkeypatch.setattr(kbridge.producer.os, "getpid", lambda: -2)
    app.producer.close()
    assert not factory.client.closed and not parent.closed


def test_worker_process_shutdown_closes_the_producer() -> None:
    app = KBridge(client_id="unit-worker", kafka=KAFKA, celery=Celery("unit-worker", broker="memory://"))
    factory = Factory()
    app.producer = Producer(app.settings, factory=factory)
    app.produce("t", 1)
    worker_process_shutdown.send(sender=None, pid=0, exitcode=0)
    assert factory.client.closed


# -- which app the module-level functions use ---------------------------------------------------------


@pytest.fixture
def restore_default() -> Iterator[None]:
    saved = kbridge.producer._default_app
    yield
    kbridge.producer._default_app = saved


@pytest.mark.usefixtures("restore_default")
def test_module_level_functions_use_the_app_configured_last() -> None:
    first, first_factory = fake_app("first")
    second, second_factory = fake_app("second")
    assert kbridge.produce("t", {"to": "second"}).topic == "t"
    assert second_factory.client.sent[0]["value"] == b'{"to":"second"}' and first_factory.made == []
    kbridge.producer.set_default_app(first)
    future = kbridge.produce_async("t", b"raw")
    kbridge.flush()
    assert future.result(0).offset == 0 and first_factory.client.sent[0]["value"] == b"raw"


@pytest.mark.usefixtures("restore_default")
def test_module_level_produce_without_an_app_says_what_to_do() -> None:
    kbridge.producer._default_app = None
    with pytest.raises(KBridgeError, match=r"no KBridge app is configured in this process.*app.produce"):
        kbridge.produce("t", 1)


def test_an_unconfigured_app_cannot_produce() -> None:
    with pytest.raises(KBridgeError, match="not configured yet"):
        KBridge(client_id="later").produce("t", 1)


def test_produce_timeout_is_validated_with_the_other_settings() -> None:
    with pytest.raises(ConfigError) as info:
        KBridge(client_id="unit", kafka=KAFKA, produce_timeout=0, topic_mapper="acme.")
    assert len(info.value.problems) == 2
    assert "produce_timeout must be a number of seconds > 0, got 0" in str(info.value)


def test_a_flush_that_times_out_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    app, factory = fake_app()
    app.produce("t", 1)

    def stuck(timeout: float | None = None) -> None:
        raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")

    monkeypatch.setattr(factory.client, "flush", stuck)
    with pytest.raises(KBridgeError, match=r"flush: messages still unacknowledged after 0.5s: KafkaTimeoutError: "):
        app.flush(0.5)
