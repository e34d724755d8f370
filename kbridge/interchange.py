"""Params <-> JSON-safe task arguments.

Bytes travel as UTF-8 text when they are valid UTF-8 (readable in Flower and
redis-cli), else as base64 with a flag, so any payload reaches perform() byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from .errors import KBridgeError
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
    if not isinstance(text, str):
        raise TypeError(f"expected text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True) if b64 else text.encode("utf-8")


def _millis(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected milliseconds as a number, got {value!r}")
    return value


def params_from_record(record: Any, deserializer: Deserializer, receive_time_ms: float | None = None) -> Params:
    """Wrap a kafka-python ConsumerRecord without touching its payload."""
    return Params(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        raw_payload=record.value,
        key=record.key,
        headers=dict(record.headers) if record.headers else {},
        timestamp_ms=record.timestamp,
        receive_time_ms=receive_time_ms if receive_time_ms is not None else time.time() * 1000.0,
        deserializer=deserializer,
    )


def to_wire(params: Params) -> dict[str, Any]:
    payload, payload_b64 = _pack(params.raw_payload)
    key, key_b64 = _pack(params.key)
    headers = []
    for name, value in params.headers.items():
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


def from_wire(data: Any, deserializer: Deserializer = json_deserializer) -> Params:
    """Rebuild Params in the worker; a malformed message is reported, never half-read."""
    try:
        return Params(
            topic=str(data["topic"]),
            partition=int(data["partition"]),
            offset=int(data["offset"]),
            raw_payload=_unpack(data["payload"], bool(data.get("payload_b64"))),
            key=_unpack(data.get("key"), bool(data.get("key_b64"))),
            headers={str(n): _unpack(v, bool(b)) for n, v, b in data.get("headers") or []},
            timestamp_ms=_millis(data.get("timestamp")),
            receive_time_ms=_millis(data.get("receive_time")),
            deserializer=deserializer,
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise KBridgeError(
            f"malformed kbridge message {str(data)[:200]!r}: {type(exc).__name__}: {exc}; "
            "it was not produced by a compatible kbridge listener"
        ) from exc
