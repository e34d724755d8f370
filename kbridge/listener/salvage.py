"""Reading a record batch kafka-python refused, as far as Kafka's record format allows.

Kafka stores header names as plain bytes, and Java, Go and librdkafka producers can
write any. kafka-python decodes them as UTF-8 and refuses the whole fetch when one is
not, and its batch classes cannot be asked to be lenient. So this reads the v2 record
batch format (KIP-98: the format of every Kafka since 0.11) itself and tells, per
record, whether kafka-python could have read it. A record it could not read keeps
what can still be had (key, value, the headers whose names decode), so it can be
dead-lettered rather than lost, and the records after it go on as usual.

A batch this cannot trust or reach into (a CRC that does not match, a codec with no
library, compressed data that does not decompress, a broken record structure, the old
v0/v1 message format) raises Unreadable: its partition must wait, not skip.

Decompression uses kafka.codec, the functions kafka-python's own record classes use,
so a batch reads the same here as there.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from crc32c import crc32c
from kafka import codec

# BaseOffset, Length, PartitionLeaderEpoch, Magic, CRC, Attributes, LastOffsetDelta,
# FirstTimestamp, MaxTimestamp, ProducerId, ProducerEpoch, BaseSequence, RecordsCount
_HEADER = struct.Struct(">qiibIhiqqqhii")
_LOG_OVERHEAD = 12  # BaseOffset and Length: what precedes the counted bytes
_MAGIC_AT, _CRC_AT, _ATTRIBUTES_AT = 16, 17, 21
_CODEC_MASK, _LOG_APPEND_TIME, _TRANSACTIONAL, _CONTROL = 0x07, 0x08, 0x10, 0x20
_PREVIEW = 64  # bytes of an undecodable header name quoted in the error

_CODECS: dict[int, tuple[str, Callable[[], bool], Callable[[bytes], bytes]]] = {
    1: ("gzip", codec.has_gzip, codec.gzip_decode),
    2: ("snappy", codec.has_snappy, codec.snappy_decode),
    3: ("lz4", codec.has_lz4, codec.lz4_decode),
    4: ("zstd", codec.has_zstd, codec.zstd_decode),
}


class Unreadable(Exception):
    """The batch at the partition's position cannot be read or trusted: hold the partition."""


class SalvagedRecord(NamedTuple):
    """A record as kafka-python's ConsumerRecord would carry it, plus why kafka-python refused it."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    problem: str | None  # None: kafka-python reads this record; else what it chokes on


@dataclass(frozen=True)
class Batch:
    """The records of the batch that holds the partition's position, from that position on."""

    records: list[SalvagedRecord]
    next_offset: int  # where reading continues after this batch
    transactional: bool


def read_batch(raw: bytes, topic: str, partition: int, position: int, check_crc: bool = True) -> Batch | None:
    """The batch of raw (a fetch response's record bytes) holding position; None when raw has none.

    Records before position were handed out already and are left out.
    """
    view = memoryview(raw)
    pos = 0
    while pos + _LOG_OVERHEAD <= len(view):
        base_offset, length = struct.unpack_from(">qi", view, pos)
        end = pos + _LOG_OVERHEAD + length
        if end > len(view):
            return None  # a batch cut off at the end of the fetch: not handed out, so fetched again
        if end - pos <= _MAGIC_AT:
            raise Unreadable(f"the record batch at offset {base_offset} is shorter than any batch header")
        if view[pos + _MAGIC_AT] < 2:
            if base_offset >= position:  # a v0/v1 message set entry's offset is its last record's
                raise Unreadable("the batch uses the old v0/v1 message format, which kbridge cannot read leniently")
        elif _last_offset(view, pos) >= position:
            return _read(view[pos:end], topic, partition, position, check_crc)
        pos = end
    return None


def _last_offset(view: memoryview, pos: int) -> int:
    if pos + _HEADER.size > len(view):
        raise Unreadable("a record batch is shorter than its header")
    header = _HEADER.unpack_from(view, pos)
    return int(header[0] + header[6])


def _read(batch: memoryview, topic: str, partition: int, position: int, check_crc: bool) -> Batch:
    (base_offset, _, _, _, crc, attributes, last_delta, first_ts, max_ts, _, _, _, count) = _HEADER.unpack_from(batch)
    if check_crc and crc32c(batch[_ATTRIBUTES_AT:]) != crc:
        raise Unreadable(f"the record batch at offset {base_offset} fails its CRC check")
    next_offset = base_offset + last_delta + 1
    transactional = bool(attributes & _TRANSACTIONAL)
    if attributes & _CONTROL:
        return Batch([], next_offset, transactional)  # transaction markers: never handed to consumers
    body = _decompress(bytes(batch[_HEADER.size:]), attributes & _CODEC_MASK, base_offset)
    log_append = bool(attributes & _LOG_APPEND_TIME)
    records = []
    pos = 0
    try:
        for _ in range(count):
            record, pos = _record(body, pos, base_offset, first_ts, max_ts if log_append else None, topic, partition)
            if record.offset >= position:
                records.append(record)
    except (IndexError, ValueError, struct.error) as exc:
        raise Unreadable(f"a record of the batch at offset {base_offset} is malformed: {exc}") from exc
    return Batch(records, next_offset, transactional)


def _decompress(body: bytes, codec_id: int, base_offset: int) -> bytes:
    if codec_id == 0:
        return body
    if codec_id not in _CODECS:
        raise Unreadable(f"the record batch at offset {base_offset} uses compression codec {codec_id}, "
                         "which Kafka does not define")
    name, available, decode = _CODECS[codec_id]
    if not available():
        raise Unreadable(f"the record batch at offset {base_offset} is {name}-compressed and no {name} "
                         "library is installed")
    try:
        return decode(body)
    except Exception as exc:
        raise Unreadable(f"the {name} data of the record batch at offset {base_offset} does not decompress: "
                         f"{type(exc).__name__}: {exc}") from exc


def _record(
    body: bytes, pos: int, base_offset: int, first_ts: int, log_append_ts: int | None, topic: str, partition: int
) -> tuple[SalvagedRecord, int]:
    length, pos = _varint(body, pos)
    start = pos
    pos += 1  # attributes: unused by the format so far
    ts_delta, pos = _varint(body, pos)
    offset_delta, pos = _varint(body, pos)
    key, pos = _bytes(body, pos)
    value, pos = _bytes(body, pos)
    count, pos = _varint(body, pos)
    if count < 0:
        raise ValueError(f"negative header count {count}")
    offset = base_offset + offset_delta
    headers: list[tuple[str, bytes | None]] = []
    problems = []
    for index in range(count):
        name, pos = _bytes(body, pos)
        if name is None:
            raise ValueError("a header without a name")
        header_value, pos = _bytes(body, pos)
        try:
            headers.append((name.decode("utf-8"), header_value))
        except UnicodeDecodeError:
            quoted = repr(name[:_PREVIEW]) + ("..." if len(name) > _PREVIEW else "")
            problems.append(f"header {index + 1} of {count} has a name that is not UTF-8: {quoted}")
    if pos - start != length:
        raise ValueError(f"record at offset {offset} is {pos - start} bytes, its length says {length}")
    timestamp = log_append_ts if log_append_ts is not None else first_ts + ts_delta
    problem = "; ".join(problems) or None
    return SalvagedRecord(topic, partition, offset, timestamp, key, value, headers, problem), pos


def _bytes(body: bytes, pos: int) -> tuple[bytes | None, int]:
    size, pos = _varint(body, pos)
    if size < 0:
        return None, pos
    if pos + size > len(body):
        raise IndexError(f"{size} bytes announced, {len(body) - pos} left")
    return body[pos:pos + size], pos + size


def _varint(body: bytes, pos: int) -> tuple[int, int]:
    """A zigzag-encoded variable-length integer, as Kafka (and protobuf) write them."""
    value = shift = 0
    while True:
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")
