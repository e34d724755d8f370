"""The topic mapper: logical names in the app, mapped names wherever Kafka is named (subscription, DLQ, produce)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition

from kbridge import BaseConsumer, IdentityMapper, KBridge, PrefixMapper, TopicMapper
from kbridge.config import Settings
from kbridge.dlq import ORIGIN_TOPIC, DeadLetters
from kbridge.errors import ConfigError
from kbridge.listener.processor import GroupProcessor
from kbridge.params import Params
from kbridge.routing.mapper import kafka_names
from kbridge.runtime import Runtime

from .test_producer import FakeKafkaProducer

KAFKA = {"bootstrap_servers": "x:1"}


class Suffix:
    """A user's own mapper: any object with incoming() and outgoing()."""

    def incoming(self, kafka_name: str) -> str:
        return kafka_name.removesuffix("-prod")

    def outgoing(self, route_name: str) -> str:
        return f"{route_name}-prod"


def test_prefix_mapper_maps_both_ways_and_leaves_foreign_names_alone() -> None:
    mapper = PrefixMapper("acme.")
    assert mapper.outgoing("orders") == "acme.orders"
    assert mapper.incoming("acme.orders") == "orders"
    assert mapper.incoming("other.orders") == "other.orders"
    assert repr(mapper) == "PrefixMapper('acme.')" and mapper == PrefixMapper("acme.")
    assert isinstance(mapper, TopicMapper) and isinstance(Suffix(), TopicMapper)
    with pytest.raises(ConfigError, match="PrefixMapper: topic prefix 'a b' is invalid"):
        PrefixMapper("a b")


def test_the_default_mapper_is_the_identity() -> None:
    settings = Settings.build({"client_id": "unit", "kafka": KAFKA})
    assert settings.topic_mapper == IdentityMapper()
    assert settings.topic_mapper.outgoing("x") == settings.topic_mapper.incoming("x") == "x"


def test_the_setting_must_look_like_a_mapper() -> None:
    with pytest.raises(ConfigError) as info:
        KBridge(client_id="unit", kafka=KAFKA, topic_mapper="acme.")
    assert "topic_mapper must have callable incoming(kafka_name) and outgoing(route_name)" in str(info.value)
    assert "lacks incoming and outgoing" in str(info.value)
    assert KBridge(client_id="unit", kafka=KAFKA, topic_mapper=Suffix()).settings.topic_mapper.outgoing("a") == "a-prod"


def test_kafka_names_reports_every_broken_mapping_at_once() -> None:
    assert kafka_names(PrefixMapper("acme."), ["a", "b"]) == {"acme.a": "a", "acme.b": "b"}

    class Broken:
        def incoming(self, kafka_name: str) -> str:
            if kafka_name == "boom":
                raise RuntimeError("no")
            return kafka_name.upper()

        def outgoing(self, route_name: str) -> str:
            return {"bad": "bad name", "same1": "same", "same2": "same", "boom": "boom"}.get(route_name, route_name)

        def __repr__(self) -> str:
            return "Broken()"

    with pytest.raises(ConfigError) as info:
        kafka_names(Broken(), ["x", "bad", "boom"])
    problems = info.value.problems
    assert len(problems) == 3
    assert "incoming(outgoing('x')) is 'X', not 'x'" in problems[0]
    assert "mapped topic name (of 'bad') 'bad name' is invalid" in problems[1]
    assert "failed on 'boom': RuntimeError: no" in problems[2]



# -- the listener: subscription and routing lookup ------------------------------------------------------


class FakeKafkaConsumer:
    """Subscribes, then returns one poll of records and asks the processor to stop."""

    def __init__(self, polled: dict[TopicPartition, list[Any]], stop: threading.Event) -> None:
        self.polled, self.stop = polled, stop
        self.subscribed: list[str] = []
        self.committed: list[dict[TopicPartition, Any]] = []

    def subscribe(self, topics: list[str], pattern: str | None = None, listener: Any = None) -> None:
        self.subscribed = topics

    def poll(self, timeout_ms: int = 0, max_records: int = 0) -> dict[TopicPartition, list[Any]]:
        self.stop.set()
        polled, self.polled = self.polled, {}
        return polled

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.committed.append(offsets)

    def close(self, autocommit: bool = False) -> None:
        pass


def record(topic: str, offset: int, value: bytes = b'{"n": 1}') -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=0, offset=offset, value=value, key=None, headers=[], timestamp=0)


class Seen(BaseConsumer):
    runs: list[tuple[str, str, int]] = []

    def perform(self) -> None:
        self.runs.append((self.topic.name, self.params.topic, self.params.offset))


def test_the_listener_subscribes_to_mapped_names_and_routes_by_logical_name(monkeypatch: pytest.MonkeyPatch) -> None:
    app = KBridge(client_id="unit", kafka=KAFKA, topic_mapper=PrefixMapper("acme."))
    consumer = type("SeenOrders", (Seen,), {"runs": []})
    with app.consumer_group("shop") as group:
        group.topic("orders", consumer=consumer, backend="inline")
        group.topic("users", consumer=consumer, backend="inline")
    stop = threading.Event()
    tp = TopicPartition("acme.orders", 0)
    fake = FakeKafkaConsumer({tp: [record("acme.orders", 5), record("acme.orders", 6)]}, stop)
    proc = GroupProcessor(Runtime.of(app), app.routes.groups["shop"], stop)
    monkeypatch.setattr(proc, "_connect", lambda: fake)
    proc.run()
    assert fake.subscribed == ["acme.orders", "acme.users"]
    # The route keeps its logical name; params describe the Kafka record, so they carry the Kafka name.
    assert consumer.runs == [("orders", "acme.orders", 5), ("orders", "acme.orders", 6)]
    assert fake.committed and fake.committed[-1][tp].offset == 7


def test_a_broken_mapper_stops_the_listener_before_it_connects(monkeypatch: pytest.MonkeyPatch) -> None:
    class OneWay(Suffix):
        def incoming(self, kafka_name: str) -> str:
            return kafka_name  # forgot to strip the suffix: every fetched record would be unroutable

    app = KBridge(client_id="unit", kafka=KAFKA, topic_mapper=OneWay())
    app.topic("orders", consumer=Seen, backend="inline")
    proc = GroupProcessor(Runtime.of(app), app.routes.groups["orders"], threading.Event())
    monkeypatch.setattr(proc, "_connect", lambda: pytest.fail("connected despite a broken mapper"))
    with pytest.raises(ConfigError, match="incoming\\(outgoing\\('orders'\\)\\) is 'orders-prod', not 'orders'"):
        proc.run()


# -- dead letters ----------------------------------------------------------------------------------------


def test_dead_letters_go_to_the_mapped_topic_and_name_the_kafka_origin() -> None:
    settings = Settings.build({"client_id": "unit", "kafka": KAFKA, "topic_mapper": PrefixMapper("acme.")})
    dead = DeadLetters(settings)
    fake = FakeKafkaProducer()
    dead._get_producer = lambda: fake  # type: ignore[method-assign]
    params = Params(topic="acme.orders", partition=0, offset=3, raw_payload=b"x")
    dead.send("orders.dlq", params, RuntimeError("boom"), 1, "unit_orders")
    assert fake.sent[0]["topic"] == "acme.orders.dlq"
    assert dict(fake.sent[0]["headers"])[ORIGIN_TOPIC] == b"acme.orders"  # where `kbridge dlq replay` sends it


def test_a_route_dead_letter_topic_is_logical_and_mapped_when_sent() -> None:
    app = KBridge(client_id="unit", kafka=KAFKA, topic_mapper=PrefixMapper("acme."))
    route = app.topic("orders", consumer=Seen, backend="inline", dead_letter_topic="orders.failed")
    assert route.name == "orders" and route.dead_letter_topic == "orders.failed"


def test_an_unknown_routes_task_goes_to_the_mapped_unroutable_topic_never_one_it_names() -> None:
    settings = Settings.build({"client_id": "unit", "kafka": KAFKA, "topic_mapper": PrefixMapper("acme.")})
    dead = DeadLetters(settings)
    fake = FakeKafkaProducer()
    dead._get_producer = lambda: fake  # type: ignore[method-assign]
    dead.send_unroutable({"args": ["unit_ghost/ghost", []]}, RuntimeError("unknown"), "t1")
    assert [m["topic"] for m in fake.sent] == ["acme.unit.unroutable"]


def test_produce_maps_outgoing_names() -> None:
    from .test_producer import fake_app

    app, factory = fake_app(topic_mapper=Suffix())
    assert app.produce("orders", 1).kafka_topic == "orders-prod"
    assert factory.client.sent[0]["topic"] == "orders-prod"


def test_topics_create_names_kafka_topics_through_the_mapper() -> None:
    from kbridge import KBridge
    from kbridge.routing.mapper import PrefixMapper
    from kbridge.topics import kafka_names

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, topic_mapper=PrefixMapper("acme."))
    assert kafka_names(app.settings, ["orders", "orders.dlq"]) == ["acme.orders", "acme.orders.dlq"]
