"""kbridge dlq show: the letters in a dead-letter topic, read without joining any group.

It commits nothing and so changes nothing for `dlq replay`. It reads each partition from
--offset (default: its beginning) up to the high watermark it sees when it starts, so it
ends even while letters keep coming. Values are shown, never interpreted: text with its
control characters made visible (a letter's bytes must not drive the terminal), hex when
not UTF-8, cut to a preview.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from .config import Settings
from .dlq import (
    ATTEMPTS,
    ERROR_CLASS,
    ERROR_MESSAGE,
    FAILED_AT,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    REPLAYS,
    TRUNCATED,
)
from .errors import KBridgeError
from .highwater import high_watermarks, partitions_of

PREVIEW_CHARS = 60
ERROR_CHARS = 80
HEX_BYTES = 24
READ_TIMEOUT = 30.0


@dataclass(frozen=True)
class Letter:
    """One dead letter as shown: every field already safe to print."""

    partition: int
    offset: int
    origin: str  # topic-partition@offset, or "-" without origin headers
    error_class: str
    error_message: str
    attempts: int | None
    replays: int
    failed_at: str
    payload: str
    payload_bytes: int | None  # None: a null value (tombstone)
    payload_encoding: str  # "text", "hex" or "null"
    truncated: bool  # the letter itself was cut down when dead-lettered

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def visible(text: str, limit: int) -> str:
    """Text with control characters escaped (no newline, escape sequence or bell reaches the terminal), cut."""
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def preview(raw: bytes | None) -> tuple[str, str]:
    """(shown, encoding) of a value: its text if UTF-8, else its first bytes in hex."""
    if raw is None:
        return "(null)", "null"
    try:
        return visible(raw.decode("utf-8"), PREVIEW_CHARS), "text"
    except UnicodeDecodeError:
        more = "…" if len(raw) > HEX_BYTES else ""
        return raw[:HEX_BYTES].hex(" ") + more, "hex"


def _header_text(headers: dict[str, bytes | None], name: str) -> str:
    raw = headers.get(name)
    return "" if raw is None else raw.decode("utf-8", "backslashreplace")


def _count(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def letter_of(record: Any) -> Letter:
    headers: dict[str, bytes | None] = dict(record.headers or [])
    origin_topic = _header_text(headers, ORIGIN_TOPIC)
    origin = "-"
    if origin_topic:
        partition, offset = _header_text(headers, ORIGIN_PARTITION), _header_text(headers, ORIGIN_OFFSET)
        origin = visible(origin_topic + (f"-{partition}" if partition else "") + (f"@{offset}" if offset else ""), 120)
    shown, encoding = preview(record.value)
    error_class = _header_text(headers, ERROR_CLASS)
    return Letter(
        partition=record.partition,
        offset=record.offset,
        origin=origin,
        error_class=visible(error_class.rsplit(".", 1)[-1], ERROR_CHARS),
        error_message=visible(_header_text(headers, ERROR_MESSAGE), ERROR_CHARS),
        attempts=_count(_header_text(headers, ATTEMPTS)),
        replays=_count(_header_text(headers, REPLAYS)) or 0,
        failed_at=visible(_header_text(headers, FAILED_AT), 40),
        payload=shown,
        payload_bytes=None if record.value is None else len(record.value),
        payload_encoding=encoding,
        truncated=TRUNCATED in headers,
    )


def read_letters(settings: Settings, topic: str, limit: int, offset: int | None = None) -> list[Letter]:
    """Up to limit letters of topic (all partitions, each from offset), up to the ends seen at the start."""
    consumer = KafkaConsumer(**{**settings.consumer_config(), "group_id": None, "enable_auto_commit": False,
                                "auto_offset_reset": "earliest", "fetch_max_wait_ms": 100})
    try:
        tps = partitions_of(consumer, topic, "`kbridge info` lists each route's dead-letter topic")
        ends = high_watermarks(settings.consumer_config(), tps)
        consumer.assign(tps)
        earliest = consumer.beginning_offsets(tps)
        todo = {}
        for tp in tps:
            start = earliest[tp] if offset is None else max(offset, earliest[tp])
            if start < ends[tp]:
                consumer.seek(tp, start)
                todo[tp] = ends[tp]
        return _read(consumer, todo, limit, topic)
    finally:
        consumer.close(autocommit=False)


def _read(consumer: KafkaConsumer, todo: dict[TopicPartition, int], limit: int, topic: str) -> list[Letter]:
    letters: list[Letter] = []
    deadline = time.monotonic() + READ_TIMEOUT
    consumer.pause(*[tp for tp in consumer.assignment() if tp not in todo])
    while todo and len(letters) < limit:
        if time.monotonic() > deadline:
            raise KBridgeError(f"reading {topic!r} took longer than {READ_TIMEOUT:.0f}s; "
                               f"showing none of it (try a smaller --limit or a later --offset)")
        for tp, records in consumer.poll(timeout_ms=200, max_records=limit - len(letters)).items():
            end = todo.get(tp)
            if end is None:
                continue
            letters.extend(letter_of(r) for r in records if r.offset < end)
        for tp, end in list(todo.items()):
            if consumer.position(tp) >= end:
                consumer.pause(tp)
                del todo[tp]
    letters.sort(key=lambda letter: (letter.partition, letter.offset))
    return letters[:limit]
