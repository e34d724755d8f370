from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from kbridge.errors import KBridgeError
from kbridge.interchange import from_wire, params_from_record, to_wire
from kbridge.params import Params


def make(raw: bytes | None, **kw: Any) -> Params:
    defaults: dict[str, Any] = {"topic": "users", "partition": 3, "offset": 42, "timestamp_ms": 1_700_000_000_123,
                                "receive_time_ms": 1_700_000_000_456.5}
    return Params(raw_payload=raw, **{**defaults, **kw})


def round_trip(p: Params) -> Params:
    """Through JSON text, as the Celery json serializer would carry it."""
    return from_wire(json.loads(json.dumps(to_wire(p))))


def assert_same(a: Params, b: Params) -> None:
    for name in ("topic", "partition", "offset", "raw_payload", "key", "headers", "timestamp_ms", "receive_time_ms"):
        assert getattr(a, name) == getattr(b, name), name


def test_utf8_payload_travels_as_readable_text() -> None:
    p = make('{"name": "Zoë"}'.encode())
    wire = to_wire(p)
    assert wire["payload"] == '{"name": "Zoë"}'
    assert wire["payload_b64"] is False
    back = round_trip(p)
    assert_same(p, back)
    assert back.payload == {"name": "Zoë"}


def test_binary_payload_survives_byte_for_byte() -> None:
    raw = bytes(range(256))
    wire = to_wire(make(raw))
    assert wire["payload_b64"] is True
    back = round_trip(make(raw))
    assert back.raw_payload == raw
    assert type(back.raw_payload) is bytes


def test_none_payload_and_key() -> None:
    p = make(None)
    back = round_trip(p)
    assert back.raw_payload is None and back.payload is None
    assert back.key is None


def test_binary_key_and_header_values() -> None:
    p = make(b"{}", key=b"\xff\x00key", headers={"trace": b"abc", "blob": b"\x80\x81\xfe", "empty": b""})
    back = round_trip(p)
    assert_same(p, back)
    assert back.key == b"\xff\x00key"
    assert back.headers == {"trace": b"abc", "blob": b"\x80\x81\xfe", "empty": b""}


def test_wire_dict_is_json_serializable() -> None:
    wire = to_wire(make(bytes(range(256)), key=b"\xfe", headers={"h": b"\x00\xff"}))
    text = json.dumps(wire)
    assert json.loads(text) == wire


def test_from_wire_never_calls_the_deserializer() -> None:
    calls: list[bytes] = []

    def deser(raw: bytes) -> Any:
        calls.append(raw)
        raise AssertionError("must be lazy")

    back = from_wire(to_wire(make(b"poison")), deser)
    assert calls == []
    assert back.raw_payload == b"poison"
    with pytest.raises(KBridgeError, match="must be lazy"):
        _ = back.payload
    assert calls == [b"poison"]


def full(**fields: Any) -> dict[str, Any]:
    """A well-formed wire message with some fields replaced; a field set to ... is removed."""
    data = to_wire(make(b"x"))
    data.update(fields)
    return {k: v for k, v in data.items() if v is not ...}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (full(topic=...), "missing field 'topic'"),
        (full(partition=...), "missing field 'partition'"),
        (full(offset="NaN-ish"), "field 'offset' must be int, got str 'NaN-ish'"),
        (full(offset="77"), "field 'offset' must be int, got str '77'"),
        (full(partition=True), "field 'partition' must be int, got bool"),
        (full(payload=...), "missing field 'payload'"),
        (full(payload="%%%", payload_b64=True), "base64"),
        (full(headers=[["only-name"]]), "header 0 must be [name, text or null, base64 flag]"),
        (full(offset=-1), "must be >= 0"),
        (full(topic=""), "field 'topic' is empty"),
        (full(evil="x"), "unknown field 'evil'"),
        (None, "must be an object, got NoneType"),
        ("junk", "junk"),
    ],
)
def test_malformed_wire_data_raises_kbridge_error_naming_the_problem(data: Any, problem: str) -> None:
    with pytest.raises(KBridgeError, match="malformed kbridge message") as info:
        from_wire(data)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "extra",
    [{"payload": 5}, {"payload": "x", "key": 3}, {"payload": "x", "headers": [["h", 7, False]]}],
    ids=["payload", "key", "header"],
)
def test_non_string_bytes_fields_raise_kbridge_error(extra: dict[str, Any]) -> None:
    with pytest.raises(KBridgeError, match="malformed kbridge message"):
        from_wire({"topic": "t", "partition": 0, "offset": 0, **extra})


def test_non_numeric_timestamp_is_refused_by_from_wire() -> None:
    with pytest.raises(KBridgeError, match="malformed kbridge message"):
        from_wire({"payload": "x", "topic": "t", "partition": 0, "offset": 0, "timestamp": "yesterday"})


def test_params_from_record_keeps_the_payload_raw() -> None:
    record = SimpleNamespace(topic="t", partition=1, offset=9, value=b"not json", key=b"k",
                             headers=[("h", b"v")], timestamp=1000)
    p = params_from_record(record, lambda raw: pytest.fail("parsed in the listener"), receive_time_ms=2000.0)
    assert (p.topic, p.partition, p.offset, p.key, p.headers) == ("t", 1, 9, b"k", {"h": b"v"})
    assert p.raw_payload == b"not json" and not p.deserialized
    assert p.timestamp_ms == 1000 and p.receive_time_ms == 2000.0
