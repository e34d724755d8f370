"""Responders: declared topics, buffered respond_to, usage validated (all problems at once) before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from kbridge import (
    BaseConsumer,
    KBridge,
    KBridgeError,
    PrefixMapper,
    ProduceError,
    Responder,
    ResponderError,
    ResponderTopic,
)
from kbridge.errors import ConfigError
from kbridge.params import Params, ParamsBatch
from kbridge.perform import Job, PerformRunner, ProducingStage
from kbridge.render import responder_topics
from kbridge.runtime import Runtime

from .test_producer import _no_real_kafka_producer, fake_app  # noqa: F401  (the autouse fixture applies here too)


def upper(value: Any) -> bytes:
    return str(value).upper().encode()


class OrderResponder(Responder):
    topics = [
        "confirmations",
        ResponderTopic("audit", required=False, delivery="async"),
        ResponderTopic("shouts", required=False, serializer=upper, multiple_usage=True),
    ]

    def respond(self, order: dict[str, Any], shouts: int = 0, audit: bool = False) -> None:
        self.respond_to("confirmations", {"id": order["id"]}, key=str(order["id"]), headers={"kind": "confirmation"})
        for i in range(shouts):
            self.respond_to("shouts", f"order {order['id']} #{i}")
        if audit:
            self.respond_to("audit", b"raw audit bytes")


def sent(factory: Any) -> list[tuple[str, Any]]:
    return [(s["topic"], s["value"]) for s in factory.client.sent] if factory.made else []


# -- declaring -----------------------------------------------------------------------------------------


def test_topics_are_read_as_a_mapping_of_specs() -> None:
    assert list(OrderResponder.topics) == ["confirmations", "audit", "shouts"]
    assert OrderResponder.topics["confirmations"] == ResponderTopic("confirmations")
    assert OrderResponder.topics["audit"].delivery == "async"
    with pytest.raises(TypeError):
        OrderResponder.topics["x"] = ResponderTopic("x")  # type: ignore[index]


def test_a_subclass_keeps_its_parents_topics_unless_it_declares_its_own() -> None:
    class Louder(OrderResponder):
        pass

    class Other(OrderResponder):
        topics = ["elsewhere"]

    assert Louder.topics is OrderResponder.topics
    assert list(Other.topics) == ["elsewhere"]


def test_every_declaration_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        class Bad(Responder):
            topics = [
                "ok", "ok", "bad name", 42,
                ResponderTopic("t", required="yes", delivery="later", serializer="json"),  # type: ignore[arg-type]
            ]
    problems = info.value.problems
    assert problems == [
        "Bad.topics: topic 'ok' is declared twice",
        "Bad.topics: topic name 'bad name' is invalid: use only letters, digits, '.', '_' and '-'",
        "Bad.topics: 42 is neither a topic name nor a ResponderTopic(...)",
        "Bad.topics: topic 't': required must be True or False, got 'yes'",
        "Bad.topics: topic 't': delivery must be 'sync' or 'async', got 'later'",
        "Bad.topics: topic 't': serializer must be a callable (object -> bytes), got 'json'",
    ]
    with pytest.raises(ConfigError, match="must be a list of topic names"):
        class Single(Responder):
            topics = "confirmations"  # type: ignore[assignment]


# -- calling ---------------------------------------------------------------------------------------------


def test_call_sends_in_order_with_per_topic_serializers() -> None:
    app, factory = fake_app()
    futures = OrderResponder(app).call({"id": 7}, shouts=2, audit=True)
    assert sent(factory) == [
        ("confirmations", b'{"id":7}'),
        ("shouts", b"ORDER 7 #0"),
        ("shouts", b"ORDER 7 #1"),
        ("audit", b"raw audit bytes"),
    ]
    assert factory.client.sent[0]["key"] == b"7" and factory.client.sent[0]["headers"] == [("kind", b"confirmation")]
    assert [f.result(0).topic for f in futures] == ["confirmations", "shouts", "shouts", "audit"]


def test_sync_topics_are_waited_for_and_async_ones_are_not() -> None:
    app, factory = fake_app()
    app.produce("warmup", 1)
    factory.client.held.add("audit")  # acknowledged only when flushed
    futures = OrderResponder(app).call({"id": 1}, audit=True)
    confirmation, audit = futures
    assert confirmation.done() and not audit.done()
    app.flush()
    assert audit.result(0).topic == "audit"


def test_usage_problems_are_reported_at_once_and_nothing_is_sent() -> None:
    class Careless(Responder):
        topics = ["confirmations", "invoices", "audit"]

        def respond(self) -> None:
            self.respond_to("confirmations", 1)
            self.respond_to("confirmations", 2)
            self.respond_to("elsewhere", 3)
            self.respond_to("audit", {1, 2})  # JSON cannot encode a set

    app, factory = fake_app()
    with pytest.raises(ResponderError) as info:
        Careless(app).call()
    assert info.value.problems == [
        "required topic 'invoices' was not used; respond_to('invoices', ...) on every call, "
        "or declare it with required=False",
        "topic 'confirmations' was used 2 times; declare it with multiple_usage=True to send more than one "
        "message to it per call",
        "topic 'elsewhere' is not declared in Careless.topics (declared: confirmations, invoices, audit)",
        "message 4 to 'audit': json_serializer cannot serialize the payload: TypeError: "
        "Object of type set is not JSON serializable",
    ]
    assert str(info.value).startswith("Careless sent nothing: 4 problem(s):")
    assert factory.made == []  # not even a Kafka connection


def test_a_missing_required_topic_alone_sends_nothing() -> None:
    app, factory = fake_app()

    class Forgetful(OrderResponder):
        def respond(self, order: dict[str, Any], shouts: int = 0, audit: bool = False) -> None:
            self.respond_to("audit", b"only the optional one")

    with pytest.raises(ResponderError, match="required topic 'confirmations' was not used"):
        Forgetful(app).call({"id": 1})
    assert factory.made == []


def test_a_sync_delivery_failure_is_a_produce_error_naming_every_failed_topic() -> None:
    class Two(Responder):
        topics = ["a", "b", "c"]

        def respond(self) -> None:
            for name in ("a", "b", "c"):
                self.respond_to(name, name)

    app, factory = fake_app(topic_mapper=PrefixMapper("acme."))
    app.produce("warmup", 1)
    factory.client.fail["acme.a"] = KafkaTimeoutError("expired a")
    factory.client.fail["acme.c"] = KafkaTimeoutError("expired c")
    with pytest.raises(ProduceError) as info:
        Two(app).call()
    assert str(info.value).startswith("could not produce to topic 'a' (Kafka topic 'acme.a'): KafkaTimeoutError")
    assert "; and to 'c': KafkaTimeoutError" in str(info.value)
    assert [s["topic"] for s in factory.client.sent[1:]] == ["acme.a", "acme.b", "acme.c"]  # sent, then waited for


def test_a_responder_without_an_app_uses_the_default_one() -> None:
    app, factory = fake_app("default-responder")  # configured last: the default app
    OrderResponder().call({"id": 3})
    assert sent(factory) == [("confirmations", b'{"id":3}')]


def test_each_call_starts_with_an_empty_buffer() -> None:
    app, factory = fake_app()
    responder = OrderResponder(app)
    responder.call({"id": 1})
    responder.call({"id": 2})
    assert [m.data for m in responder.messages] == [{"id": 2}]
    assert len(factory.client.sent) == 2


# -- consumers: respond_with and the responder route option -------------------------------------------------


class OrdersConsumer(BaseConsumer):
    def perform(self) -> None:
        self.respond_with(self.params.payload, shouts=1)


def run(app: KBridge, topic: str, payload: bytes) -> None:
    """perform() inside the producing stage of app's runtime, as every runner runs it; failures propagate."""
    route = app.routes.find(f"{app.client_id}_{topic}/{topic}")
    params = Params(topic=topic, partition=0, offset=0, raw_payload=payload)
    PerformRunner([ProducingStage(Runtime.of(app).producer)]).attempt(Job(route, ParamsBatch([params])))


def test_respond_with_uses_the_routes_responder_and_the_app_that_routed_it() -> None:
    mine, my_factory = fake_app("mine", topic_mapper=PrefixMapper("mine."))
    mine.topic("orders", consumer=OrdersConsumer, responder=OrderResponder, backend="inline")
    other, other_factory = fake_app("other")  # configured last, so the default app; not the routing one
    other.topic("orders", consumer=OrdersConsumer, responder=OrderResponder, backend="inline")
    run(mine, "orders", b'{"id": 9}')
    assert sent(my_factory) == [("mine.confirmations", b'{"id":9}'), ("mine.shouts", b"ORDER 9 #0")]
    assert other_factory.made == []


def test_respond_with_without_a_responder_says_how_to_route_one() -> None:
    app, _ = fake_app()
    app.topic("orders", consumer=OrdersConsumer, backend="inline")
    with pytest.raises(KBridgeError, match="topic 'orders' has no responder; route it with responder=YourResponder"):
        run(app, "orders", b'{"id": 1}')


def test_the_responder_option_is_validated_with_the_others() -> None:
    app = KBridge(client_id="unit", kafka={"bootstrap_servers": "x:1"})
    with pytest.raises(ConfigError) as info:
        app.topic("orders", consumer=OrdersConsumer, responder=OrderResponder(), max_retries=-1)
    assert len(info.value.problems) == 2
    assert "responder must be a kbridge.Responder subclass (the class, not an instance)" in str(info.value)


def test_flow_lists_the_responder_topics() -> None:
    app, _ = fake_app()
    route = app.topic("orders", consumer=OrdersConsumer, responder=OrderResponder, backend="inline")
    assert responder_topics(route) == ["confirmations", "audit", "shouts"]
