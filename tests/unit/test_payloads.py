"""payload_model: validation into pydantic models, msgspec Structs and dataclasses, lazily, with field paths."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from typing import Any, Literal

import msgspec
import pydantic
import pytest

from kbridge import BaseConsumer, KBridge, Params, before_enqueue
from kbridge.dlq import ATTEMPTS, ERROR_CLASS, VALIDATION_ERRORS, Failure, dead_letter_headers
from kbridge.errors import ConfigError, DeserializationError, PayloadValidationError
from kbridge.params import json_deserializer
from kbridge.payloads import TypedDeserializer, model_kind, typed_deserializer
from kbridge.testing import TestClient


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Line:
    sku: str
    quantity: int = 1


@dataclasses.dataclass
class Order:
    id: int
    lines: list[Line]
    colour: Colour
    kind: Literal["retail", "trade"] = "retail"
    note: str | None = None
    tags: dict[str, float] = dataclasses.field(default_factory=dict)
    due: dt.date | None = None
    size: tuple[int, int] | None = None


class PydLine(pydantic.BaseModel):
    sku: str
    quantity: int = pydantic.Field(gt=0)


class PydOrder(pydantic.BaseModel):
    id: int
    lines: list[PydLine]


class MsgOrder(msgspec.Struct):
    id: int
    lines: list[dict[str, int]]


def validate(model: type, payload: Any) -> Any:
    return TypedDeserializer(json_deserializer, model)(json.dumps(payload).encode())


def errors_of(model: type, payload: Any) -> list[tuple[str, str]]:
    with pytest.raises(PayloadValidationError) as caught:
        validate(model, payload)
    assert isinstance(caught.value, DeserializationError)  # so it is never retried
    return caught.value.errors


def test_nested_dataclasses_are_built_from_json() -> None:
    order = validate(Order, {"id": 1, "lines": [{"sku": "tea"}, {"sku": "cup", "quantity": 3}], "colour": "red",
                             "tags": {"a": 1}, "due": "2026-12-03", "size": [2, 3]})
    assert order == Order(1, [Line("tea"), Line("cup", 3)], Colour.RED, tags={"a": 1.0}, due=dt.date(2026, 12, 3),
                          size=(2, 3))
    assert isinstance(order.lines[0], Line)


def test_dataclass_errors_name_every_field_path() -> None:
    errors = errors_of(Order, {"id": True, "lines": [{"quantity": "x"}, 5], "colour": "green", "kind": "x",
                               "note": 3, "tags": {"a": "b"}, "due": "soon", "size": [1]})
    assert [path for path, _ in errors] == ["id", "lines.0.sku", "lines.0.quantity", "lines.1", "colour", "kind",
                                            "note", "tags.a", "due", "size"]
    assert dict(errors)["lines.0.sku"] == "Field required"
    assert "'red', 'blue'" in dict(errors)["colour"]
    assert errors_of(Order, [1]) == [("$", "Input should be an object (Order), got list")]


def test_a_dataclass_post_init_check_is_a_validation_error() -> None:
    @dataclasses.dataclass
    class Positive:
        n: int

        def __post_init__(self) -> None:
            if self.n <= 0:
                raise ValueError("n must be > 0")

    assert errors_of(Positive, {"n": 0}) == [("$", "ValueError: n must be > 0")]


def test_pydantic_and_msgspec_errors_carry_field_paths() -> None:
    assert validate(PydOrder, {"id": 1, "lines": [{"sku": "a", "quantity": 1}]}).lines[0].sku == "a"
    assert [p for p, _ in errors_of(PydOrder, {"id": "x", "lines": [{"quantity": 0}]})] == [
        "id", "lines.0.sku", "lines.0.quantity"]
    assert validate(MsgOrder, {"id": 1, "lines": [{"a": 1}]}) == MsgOrder(1, [{"a": 1}])
    [(path, message)] = errors_of(MsgOrder, {"id": 1, "lines": [{"a": 1}, {"b": "x"}]})
    assert path.startswith("lines.1") and "int" in message


def test_model_kinds_and_bad_models_are_reported_when_the_route_is_declared() -> None:
    assert [model_kind(m) for m in (PydOrder, MsgOrder, Order, dict, "Order")] == [
        "pydantic", "msgspec", "dataclass", None, None]
    assert typed_deserializer(json_deserializer, None) is json_deserializer  # an untyped route: nothing added
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"})

    class Noop(BaseConsumer):
        def perform(self) -> None: ...

    with pytest.raises(ConfigError, match="payload_model must be a pydantic v2 BaseModel, a msgspec Struct or a "
                                          "dataclass"):
        app.topic("a", consumer=Noop, backend="inline", payload_model=dict)

    @dataclasses.dataclass
    class Unresolvable:
        x: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigError, match="field types cannot be resolved"):
        app.topic("b", consumer=Noop, backend="inline", payload_model=Unresolvable)


def test_the_letter_names_the_field_paths() -> None:
    params = Params(topic="orders", partition=0, offset=7, raw_payload=b'{"id": "x"}',
                    deserializer=TypedDeserializer(json_deserializer, PydOrder))
    with pytest.raises(PayloadValidationError) as caught:
        params.payload  # noqa: B018
    assert str(caught.value).startswith("payload of orders-0@7 does not validate as PydOrder: 2 error(s): id: ")
    headers = dict(dead_letter_headers(params, caught.value, 1, "shop_orders"))
    assert json.loads(headers[VALIDATION_ERRORS] or b"") == [
        {"path": "id", "message": "Input should be a valid integer, unable to parse string as an integer"},
        {"path": "lines", "message": "Field required"},
    ]
    assert VALIDATION_ERRORS not in dict(dead_letter_headers(params, ValueError("x"), 1, "g"))
    assert Failure.of(caught.value).field_errors == (("id", caught.value.errors[0][1]), ("lines", "Field required"))


class Counting:
    """A deserializer that counts its calls: where, and how often, payloads are read."""

    __name__ = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: bytes) -> Any:
        self.calls += 1
        return json_deserializer(raw)


@pytest.mark.parametrize("backend", ["celery", "inline"])
@pytest.mark.parametrize(("model", "valid"), [
    (PydOrder, {"id": 1, "lines": [{"sku": "a", "quantity": 2}]}),
    (Order, {"id": 1, "lines": [{"sku": "a", "quantity": 2}], "colour": "blue"}),
    (MsgOrder, {"id": 1, "lines": [{"quantity": 2}]}),
])
def test_perform_and_filters_see_instances_and_invalid_payloads_are_dead_lettered_at_once(
    backend: str, model: type, valid: dict[str, Any]
) -> None:
    from celery import Celery

    seen: list[Any] = []

    class Orders(BaseConsumer):
        @before_enqueue
        def has_id(self) -> bool:
            seen.append(("filter", type(self.params.payload)))
            return True

        def perform(self) -> None:
            seen.append(("perform", type(self.params.payload)))

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"},
                  celery=Celery("t", broker="memory://"))
    app.topic("orders", consumer=Orders, backend=backend, payload_model=model, max_retries=3)
    client = TestClient(app)
    result = client.publish("orders", valid)
    assert [run.attempts for run in result.runs] == [1]
    assert seen == [("filter", model), ("perform", model)]
    result = client.publish("orders", {"id": "one", "lines": []})
    [letter] = result.dead_lettered
    assert letter.attempts == 1 and not result.runs  # in the listener's filter: never enqueued, never retried
    headers = dict(letter.headers)
    assert headers[ERROR_CLASS] == b"kbridge.errors.PayloadValidationError" and headers[ATTEMPTS] == b"1"
    assert "id" in [e["path"] for e in json.loads(headers[VALIDATION_ERRORS] or b"")]


def test_the_listener_reads_a_typed_payload_only_when_a_filter_does() -> None:
    from celery import Celery

    class Plain(BaseConsumer):
        def perform(self) -> None:
            self.params.payload  # noqa: B018

    class Filtered(Plain):
        @before_enqueue
        def reads(self) -> bool:
            return self.params.payload.id > 0

    plain, filtered = Counting(), Counting()
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"},
                  celery=Celery("t", broker="memory://"))
    app.topic("plain", consumer=Plain, payload_model=PydOrder, deserializer=plain)
    app.topic("filtered", consumer=Filtered, payload_model=PydOrder, deserializer=filtered)
    client = TestClient(app)
    payload = {"id": 1, "lines": []}
    client.publish("plain", payload)
    client.publish("filtered", payload)
    assert (plain.calls, filtered.calls) == (1, 2)  # the worker only; the listener's filter and the worker
    result = client.publish("plain", {"id": "x"})  # invalid, no filter: found in the worker, at once
    assert [letter.attempts for letter in result.dead_lettered] == [1]
    assert [type(e) for e in result.errors] == [PayloadValidationError]


def test_a_letter_stays_small_however_many_and_long_the_errors() -> None:
    @dataclasses.dataclass
    class Many:
        values: list[Literal["a"]]

    errors = errors_of(Many, {"values": ["x" * 10_000] * 50})
    assert len(errors) == 20 and all(len(message) <= 300 for _, message in errors)
    with pytest.raises(PayloadValidationError, match=r"50 error\(s\).*\(and 30 more\)$"):
        validate(Many, {"values": ["x" * 10_000] * 50})
