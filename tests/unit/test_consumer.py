from __future__ import annotations

from typing import Any

import pytest

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.errors import KBridgeError
from kbridge.params import Params, ParamsBatch
from kbridge.routing import Route


def batch(n: int) -> ParamsBatch:
    return ParamsBatch([Params(topic="t", partition=0, offset=o, raw_payload=b"{}") for o in range(n)])


def route(consumer: type[BaseConsumer], **options: Any) -> Route:
    app = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"})
    return app.topic("t", consumer=consumer, **options)


class Base(BaseConsumer):
    @before_enqueue
    def base_first(self) -> bool:
        return True

    def not_a_filter(self) -> bool:
        return False

    @before_enqueue
    def base_second(self) -> bool:
        return True

    def perform(self) -> None:
        pass


class Child(Base):
    @before_enqueue
    def child_z(self) -> bool:
        return True

    @before_enqueue
    def child_a(self) -> bool:
        return True


def test_filters_are_collected_in_definition_order_including_inherited() -> None:
    assert Base._filters == ("base_first", "base_second")
    assert Child._filters == ("base_first", "base_second", "child_z", "child_a")
    assert BaseConsumer._filters == ()


def test_run_filters_stops_at_first_falsy_filter() -> None:
    calls: list[str] = []

    class Stops(BaseConsumer):
        @before_enqueue
        def one(self) -> int:
            calls.append("one")
            return 1

        @before_enqueue
        def two(self) -> None:
            calls.append("two")

        @before_enqueue
        def three(self) -> bool:
            calls.append("three")
            return True

        def perform(self) -> None:
            pass

    assert Stops(route(Stops), batch(1)).run_filters() is False
    assert calls == ["one", "two"]


def test_run_filters_true_when_all_pass_or_none_defined() -> None:
    assert Child(route(Child), batch(1)).run_filters() is True

    class NoFilters(BaseConsumer):
        def perform(self) -> None:
            pass

    assert NoFilters(route(NoFilters), batch(1)).run_filters() is True


def test_filters_read_params_of_the_message() -> None:
    class Positive(BaseConsumer):
        @before_enqueue
        def positive(self) -> bool:
            return self.params.payload["counter"] > 0

        def perform(self) -> None:
            pass

    r = route(Positive)
    msg = Params(topic="t", partition=0, offset=0, raw_payload=b'{"counter": 0}')
    assert Positive(r, ParamsBatch([msg])).run_filters() is False


def test_params_is_the_single_message_in_non_batch_mode() -> None:
    b = batch(1)
    consumer = Base(route(Base), b)
    assert consumer.params is b[0]
    assert consumer.params_batch is b


def test_params_in_batch_mode_with_several_messages_raises() -> None:
    consumer = Base(route(Base, batch_consuming=True), batch(3))
    with pytest.raises(KBridgeError, match="params_batch") as info:
        _ = consumer.params
    assert "Base" in str(info.value) and "'t'" in str(info.value)


def test_params_in_batch_mode_with_one_message_is_that_message() -> None:
    b = batch(1)
    assert Base(route(Base, batch_consuming=True), b).params is b[0]


def test_base_perform_is_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match="Bare"):
        type("Bare", (BaseConsumer,), {})(route(Base), batch(1)).perform()
