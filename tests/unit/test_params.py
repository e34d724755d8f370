from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kbridge.errors import DeserializationError, KBridgeError
from kbridge.params import Params, ParamsBatch


def make(offset: int = 0, raw: bytes | None = b'{"n": 1}', **kw) -> Params:
    return Params(topic="t", partition=2, offset=offset, raw_payload=raw, **kw)


class CountingDeserializer:
    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, raw: bytes) -> object:
        self.calls.append(raw)
        return {"parsed": raw.decode()}


def test_payload_is_deserialized_lazily_once_and_cached() -> None:
    deser = CountingDeserializer()
    p = make(raw=b"abc", deserializer=deser)
    assert deser.calls == [] and not p.deserialized
    first = p.payload
    assert first == {"parsed": "abc"}
    assert p.payload is first
    assert deser.calls == [b"abc"]
    assert p.deserialized


def test_none_payload_is_none_without_calling_deserializer() -> None:
    deser = CountingDeserializer()
    p = make(raw=None, deserializer=deser)
    assert p.payload is None
    assert deser.calls == []


def test_default_deserializer_is_json() -> None:
    assert make(raw=b'{"n": 1, "s": "\xc3\xa9"}').payload == {"n": 1, "s": "é"}


def test_deserializer_error_surfaces_on_access_naming_the_message() -> None:
    p = make(offset=5, raw=b"not json")
    with pytest.raises(DeserializationError, match="t-2@5") as info:
        _ = p.payload
    assert isinstance(info.value, KBridgeError)
    assert isinstance(info.value.__cause__, ValueError)
    assert not p.deserialized


def test_item_access() -> None:
    p = make(offset=7, key=b"k", headers={"h": b"v"})
    assert p["payload"] == {"n": 1}
    assert p["offset"] == 7
    assert p["key"] == b"k"
    assert p["headers"] == {"h": b"v"}
    assert p["raw_payload"] == b'{"n": 1}'


def test_unknown_item_raises_key_error_naming_the_key_and_the_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        make()["paylaod"]
    message = str(info.value)
    assert "'paylaod'" in message
    assert "payload" in message.replace("'paylaod'", "")


def test_private_attributes_are_not_reachable_by_item_access() -> None:
    with pytest.raises(KeyError):
        make()["_deserializer"]


def test_timestamps_are_utc_datetimes() -> None:
    p = make(timestamp_ms=1_700_000_000_123, receive_time_ms=1_700_000_001_500.0)
    assert p.timestamp == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=timezone.utc)
    assert p.timestamp.utcoffset().total_seconds() == 0
    assert p.receive_time == datetime(2023, 11, 14, 22, 13, 21, 500000, tzinfo=timezone.utc)


def test_missing_or_negative_timestamp_is_none() -> None:
    assert make().timestamp is None
    assert make(timestamp_ms=-1).timestamp is None


def test_headers_default_to_empty_dict() -> None:
    assert make().headers == {}


def test_params_batch_sequence_protocol() -> None:
    items = [make(offset=o, raw=f'{{"n": {o}}}'.encode()) for o in range(4)]
    batch = ParamsBatch(items)
    assert len(batch) == 4
    assert [p.offset for p in batch] == [0, 1, 2, 3]
    assert batch[1] is items[1]
    assert batch[-1] is items[3]
    sliced = batch[1:3]
    assert isinstance(sliced, ParamsBatch)
    assert [p.offset for p in sliced] == [1, 2]
    assert batch.payloads == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]


def test_params_batch_copies_its_input() -> None:
    items = [make()]
    batch = ParamsBatch(items)
    items.append(make(offset=1))
    assert len(batch) == 1


def test_params_batch_payloads_are_lazy_until_read() -> None:
    deser = CountingDeserializer()
    batch = ParamsBatch([make(offset=o, raw=b"x", deserializer=deser) for o in range(3)])
    assert len(batch) == 3 and deser.calls == []
    assert batch.payloads == [{"parsed": "x"}] * 3
    assert len(deser.calls) == 3
