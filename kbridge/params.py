"""Messages as consumers see them.

The payload is parsed only when first read: the listener usually never reads it,
so a poison payload costs nothing there and is parsed (and reported) in the worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, overload

from .errors import DeserializationError, PayloadValidationError

Deserializer = Callable[[bytes], Any]
HeaderList = list[tuple[str, bytes | None]]

_UNSET: Any = object()


def json_deserializer(raw: bytes) -> Any:
    """The default deserializer. Strict UTF-8, so a non-UTF-8 payload is an error, not mojibake."""
    return json.loads(raw.decode("utf-8"))


def _from_ms(ms: float | None) -> datetime | None:
    if ms is None or ms < 0:
        return None
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


class Params:
    """One Kafka message with lazily deserialized payload and its metadata."""

    carrier: dict[str, str] | None
    __slots__ = (
        "topic", "partition", "offset", "key", "header_list", "raw_payload",
        "timestamp_ms", "receive_time_ms", "_deserializer", "_payload", "_headers", "carrier",
    )

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        raw_payload: bytes | None,
        key: bytes | None = None,
        headers: dict[str, bytes | None] | Sequence[tuple[str, bytes | None]] | None = None,
        timestamp_ms: float | None = None,
        receive_time_ms: float | None = None,
        deserializer: Deserializer = json_deserializer,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.raw_payload = raw_payload
        self.key = key
        # Kafka headers are an ordered list in which a name may repeat; the list is what travels to the
        # worker and into dead letters, so no header is lost. .headers is the dict view users expect.
        if headers is None:
            self.header_list: HeaderList = []
        elif isinstance(headers, dict):
            self.header_list = list(headers.items())
        else:
            self.header_list = list(headers)
        self._headers: dict[str, bytes | None] | None = None
        self.timestamp_ms = timestamp_ms
        self.receive_time_ms = receive_time_ms
        self._deserializer = deserializer
        self._payload = _UNSET
        # self.carrier: the hand-over's transport headers this message travels in (trace context, task
        # id), set by tracing in the listener and by the worker from the task message; never a Kafka
        # header, never part of the task's arguments. Left unset here, so it costs nothing when tracing
        # is off: read it with carried(params).

    @property
    def payload(self) -> Any:
        if self._payload is _UNSET:
            if self.raw_payload is None:
                self._payload = None
            else:
                try:
                    self._payload = self._deserializer(self.raw_payload)
                except PayloadValidationError as exc:
                    raise PayloadValidationError(
                        f"payload of {self.topic}-{self.partition}@{self.offset} {exc}", exc.errors
                    ) from None
                except Exception as exc:
                    name = getattr(self._deserializer, "__name__", repr(self._deserializer))
                    raise DeserializationError(
                        f"payload of {self.topic}-{self.partition}@{self.offset} cannot be read by {name}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        return self._payload

    @property
    def headers(self) -> dict[str, bytes | None]:
        """Headers by name; where a name repeats, the last value (header_list keeps every one, in order)."""
        if self._headers is None:
            self._headers = dict(self.header_list)
        return self._headers

    @property
    def deserialized(self) -> bool:
        return self._payload is not _UNSET

    @property
    def timestamp(self) -> datetime | None:
        return _from_ms(self.timestamp_ms)

    @property
    def receive_time(self) -> datetime | None:
        return _from_ms(self.receive_time_ms)

    def __getitem__(self, name: str) -> Any:
        if name not in _ITEM_NAMES:
            raise KeyError(f"params has no {name!r}; known keys: {', '.join(sorted(_ITEM_NAMES))}")
        return getattr(self, name)

    def __repr__(self) -> str:
        return f"<Params {self.topic}/{self.partition}@{self.offset}>"


def carried(params: Params) -> dict[str, str] | None:
    """The carrier of a message's hand-over (see Params.carrier), or None when nothing set one."""
    return getattr(params, "carrier", None)


_ITEM_NAMES = frozenset(
    {"payload", "raw_payload", "key", "headers", "header_list", "topic", "partition", "offset", "timestamp",
     "receive_time"}
)


class ParamsBatch(Sequence[Params]):
    """The messages one consumer run handles, in offset order."""

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[Params]) -> None:
        self._items = list(items)

    @overload
    def __getitem__(self, index: int) -> Params: ...
    @overload
    def __getitem__(self, index: slice) -> ParamsBatch: ...
    def __getitem__(self, index: int | slice) -> Params | ParamsBatch:
        if isinstance(index, slice):
            return ParamsBatch(self._items[index])
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Params]:
        return iter(self._items)

    @property
    def payloads(self) -> list[Any]:
        return [p.payload for p in self._items]

    def __repr__(self) -> str:
        return f"<ParamsBatch of {len(self._items)}>"
