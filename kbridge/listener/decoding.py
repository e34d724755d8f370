"""Keeping KafkaConsumer.poll() alive past record batches kafka-python cannot decode.

kafka-python decodes record batches inside poll(). When one cannot be decoded (a CRC
that does not match, a codec with no library, compressed data that does not
decompress, a header name that is not UTF-8), poll() raises without saying which
partition, and the fetcher keeps the broken record iterator as its current one: the
next poll() spins on it forever, and no other partition is read again. kafka-python
has no public hook for any of this, so this module reaches into its fetcher; nothing
else in kbridge does:

- Fetcher._parse_fetched_data(completed_fetch) turns a fetch response for one partition
  into a Fetcher.PartitionRecords. It is wrapped to keep the response's record bytes
  (completed_fetch.partition_data.records) on that object, so kbridge.listener.salvage
  can read what kafka-python refused.
- Fetcher._append(drained, part, max_records, update_offsets) takes records out of a
  PartitionRecords; decoding happens there. It is wrapped so that a failure is noted
  with its partition and position (part.topic_partition, part.next_fetch_offset) and
  the PartitionRecords is drained (part.drain()): the fetcher then forgets it and
  fetches that partition again from its position, or from wherever kbridge seeks it.

DecodeGuard checks these names and signatures when it is installed and raises
IncompatibleKafkaClient if a kafka-python release changed them, so the listener
refuses to start rather than run unprotected. Written against kafka-python 3.0.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kafka
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer import fetcher as kafka_fetcher

from ..errors import KBridgeError

RAW_ATTRIBUTE = "_kbridge_raw_records"
_EXPECTED = {
    "_parse_fetched_data": ["completed_fetch"],
    "_append": ["drained", "part", "max_records", "update_offsets"],
}
_PARTITION_RECORDS_INIT = ["fetch_offset", "tp", "records"]
_REMEMBERED = 4  # kafka-python holds back one failure at a time to raise on the next poll()


class IncompatibleKafkaClient(KBridgeError):
    """The installed kafka-python no longer has the fetcher internals kbridge.listener.decoding relies on."""


@dataclass(frozen=True)
class DecodeFailure:
    """A partition kafka-python could not decode at offset; every record before it was handed out."""

    tp: TopicPartition
    offset: int
    error: BaseException
    raw: bytes | None  # the fetch response's record bytes for tp, from offset's batch on (or earlier)


Polled = dict[TopicPartition, list[Any]]


class DecodeGuard:
    """Wraps one KafkaConsumer's fetcher; poll() reports decoding failures instead of raising them."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer
        fetcher = check(consumer)
        self._failures: list[DecodeFailure] = []
        self._raised: deque[BaseException] = deque(maxlen=_REMEMBERED)
        parse: Callable[[Any], Any] = fetcher._parse_fetched_data
        append: Callable[[Any, Any, int, bool], int] = fetcher._append

        def parse_keeping_bytes(completed_fetch: Any) -> Any:
            part = parse(completed_fetch)
            if part is not None:
                raw = getattr(completed_fetch.partition_data, "records", None)
                setattr(part, RAW_ATTRIBUTE, raw if isinstance(raw, (bytes, bytearray, memoryview)) else None)
            return part

        def append_noting_failures(drained: Any, part: Any, max_records: int, update_offsets: bool) -> int:
            try:
                return append(drained, part, max_records, update_offsets)
            except Exception as exc:
                self._failed(part, exc)
                raise

        fetcher._parse_fetched_data = parse_keeping_bytes
        fetcher._append = append_noting_failures

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self._consumer.config
        return config

    def poll(self, timeout_ms: int, max_records: int) -> tuple[Polled, list[DecodeFailure]]:
        """KafkaConsumer.poll(), plus the decoding failures met; other errors are raised as before.

        kafka-python may return the records it read before a failure and raise the failure
        on the next poll(); that raise is recognised and swallowed, as it was reported already.
        """
        try:
            polled: Polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except Exception as exc:
            if not any(exc is known for known in self._raised):
                raise
            polled = {}
        failures, self._failures = self._failures, []
        return polled, failures

    def _failed(self, part: Any, exc: Exception) -> None:
        try:
            tp, offset = part.topic_partition, part.next_fetch_offset
        except AttributeError as missing:
            raise IncompatibleKafkaClient(_incompatible(f"Fetcher.PartitionRecords has no {missing.name}")) from exc
        part.drain()  # else the fetcher keeps the dead iterator and spins on it
        raw = getattr(part, RAW_ATTRIBUTE, None)
        self._raised.append(exc)
        self._failures.append(DecodeFailure(tp, offset, exc, None if raw is None else bytes(raw)))


def check(consumer: KafkaConsumer) -> Any:
    """The consumer's fetcher, once its internals are what this module expects; raises if not."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None:
        raise IncompatibleKafkaClient(_incompatible("KafkaConsumer has no _fetcher"))
    for name, params in _EXPECTED.items():
        _check_signature(getattr(fetcher, name, None), f"Fetcher.{name}", params)
    records_class = getattr(type(fetcher), "PartitionRecords", None)
    if records_class is None or not callable(getattr(records_class, "drain", None)):
        raise IncompatibleKafkaClient(_incompatible("Fetcher.PartitionRecords.drain() is gone"))
    init_params = list(inspect.signature(records_class.__init__).parameters)[1:len(_PARTITION_RECORDS_INIT) + 1]
    if init_params != _PARTITION_RECORDS_INIT:
        raise IncompatibleKafkaClient(_incompatible(f"Fetcher.PartitionRecords takes {init_params}"))
    fields = getattr(getattr(kafka_fetcher, "CompletedFetch", None), "_fields", ())
    if "partition_data" not in fields:
        raise IncompatibleKafkaClient(_incompatible("CompletedFetch has no partition_data"))
    return fetcher


def _check_signature(method: Any, name: str, params: list[str]) -> None:
    if not callable(method):
        raise IncompatibleKafkaClient(_incompatible(f"{name} is gone"))
    found = list(inspect.signature(method).parameters)
    if found != params:
        raise IncompatibleKafkaClient(_incompatible(f"{name} takes {found}, not {params}"))


def _incompatible(what: str) -> str:
    return (f"kafka-python {kafka.__version__} is not supported by kbridge.listener.decoding ({what}); "
            "it was written against kafka-python 3.0. Pin kafka-python to the version kbridge declares")
