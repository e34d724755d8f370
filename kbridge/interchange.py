"""Params <-> JSON-safe task arguments.

Bytes travel as UTF-8 text when they are valid UTF-8 (readable in Flower and
redis-cli), else as base64 with a flag, so any payload reaches perform() byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from .errors import WireError
from .params import Deserializer, Params, json_deserializer


def _pack(raw: bytes | None) -> tuple[str | None, bool]:
    if raw is None:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), True


def _unpack(text: str | None, b64: bool) -> bytes | None:
    if text is None:
        return None
    return base64.b64decode(text, validate=True) if b64 else text.encode("utf-8")


def params_from_record(record: Any, deserializer: Deserializer, receive_time_ms: float | None = None) -> Params:
    """Wrap a kafka-python ConsumerRecord without touching its payload."""
    return Params(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        raw_payload=record.value,
        key=record.key,
        headers=record.headers or None,
        timestamp_ms=record.timestamp,
        receive_time_ms=receive_time_ms if receive_time_ms is not None else time.time() * 1000.0,
        deserializer=deserializer,
    )


def to_wire(params: Params) -> dict[str, Any]:
    payload, payload_b64 = _pack(params.raw_payload)
    key, key_b64 = _pack(params.key)
    headers = []
    for name, value in params.header_list:
        text, b64 = _pack(value)
        headers.append([name, text, b64])
    return {
        "payload": payload,
        "payload_b64": payload_b64,
        "key": key,
        "key_b64": key_b64,
        "headers": headers,
        "topic": params.topic,
        "partition": params.partition,
        "offset": params.offset,
        "timestamp": params.timestamp_ms,
        "receive_time": params.receive_time_ms,
    }


WIRE_FIELDS: dict[str, tuple[type, ...]] = {
    "payload": (str, type(None)),
    "payload_b64": (bool,),
    "key": (str, type(None)),
    "key_b64": (bool,),
    "headers": (list,),
    "topic": (str,),
    "partition": (int,),
    "offset": (int,),
    "timestamp": (int, float, type(None)),
    "receive_time": (int, float, type(None)),
}


_WIRE_KEYS = frozenset(WIRE_FIELDS)


def _well_formed(data: Any) -> bool:
    """The quick check every task takes; the slow one below only explains what is wrong. Exact types:
    a bool is not an int here."""
    if type(data) is not dict or data.keys() != _WIRE_KEYS:
        return False
    for name, types in WIRE_FIELDS.items():
        if type(data[name]) not in types:
            return False
    if not data["topic"] or data["partition"] < 0 or data["offset"] < 0:
        return False
    for header in data["headers"]:
        if not (type(header) is list and len(header) == 3 and type(header[0]) is str
                and (header[1] is None or type(header[1]) is str) and type(header[2]) is bool):
            return False
    return True


def wire_problems(data: Any) -> list[str]:
    """Everything wrong with one message of a task, at once. Task data comes from whoever can write to
    the Celery broker, so nothing is coerced: "77" is not an offset."""
    if _well_formed(data):
        return []
    if not isinstance(data, dict):
        return [f"a message must be an object, got {type(data).__name__}"]
    problems = [f"missing field {name!r}" for name in WIRE_FIELDS if name not in data]
    problems += [f"unknown field {name!r}" for name in data if name not in WIRE_FIELDS]
    for name, types in WIRE_FIELDS.items():
        if name not in data:
            continue
        value = data[name]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"field {name!r} must be {expected}, got {type(value).__name__} {str(value)[:40]!r}")
    if not problems:
        if data["topic"] == "":
            problems.append("field 'topic' is empty")
        if data["partition"] < 0 or data["offset"] < 0:
            problems.append(f"partition and offset must be >= 0, got {data['partition']} and {data['offset']}")
        for i, header in enumerate(data["headers"]):
            if not (isinstance(header, list) and len(header) == 3 and isinstance(header[0], str)
                    and isinstance(header[1], (str, type(None))) and isinstance(header[2], bool)):
                problems.append(f"header {i} must be [name, text or null, base64 flag], got {str(header)[:60]!r}")
    return problems


def from_wire(data: Any, deserializer: Deserializer = json_deserializer) -> Params:
    """Rebuild Params in the worker; a malformed message is reported, never half-read."""
    problems = wire_problems(data)
    if not problems:
        try:
            return Params(
                topic=data["topic"],
                partition=data["partition"],
                offset=data["offset"],
                raw_payload=_unpack(data["payload"], data["payload_b64"]),
                key=_unpack(data["key"], data["key_b64"]),
                headers=[(n, _unpack(v, b)) for n, v, b in data["headers"]],
                timestamp_ms=data["timestamp"],
                receive_time_ms=data["receive_time"],
                deserializer=deserializer,
            )
        except (ValueError, binascii.Error) as exc:
            problems.append(f"undecodable base64: {exc}")
    raise WireError(
        f"malformed kbridge message {str(data)[:200]!r}: {'; '.join(problems)}; "
        "it was not produced by a compatible kbridge listener"
    )
