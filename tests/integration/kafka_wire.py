"""Kafka requests by hand, for what no client will do: write a broken record batch, or show a batch's codec.

Produce v3 and Fetch v4 over a plain socket, to a single broker (the test broker leads
every partition). Record batches are built with kafka-python's record builder, then
changed byte by byte. Nothing here is kbridge code; it only makes test data.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import crc32c
from kafka.record.default_records import DefaultRecordBatchBuilder

HEADER_SIZE = 61
CRC_AT, ATTRIBUTES_AT = 17, 21
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def record_batch(values: list[bytes], codec_bits: int = 0, spoil_crc: bool = False) -> bytes:
    """An uncompressed batch; codec_bits claims a codec its bytes are not in, spoil_crc breaks its checksum."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=None, value=value, headers=[])
    buf = bytearray(builder.build())
    struct.pack_into(">h", buf, ATTRIBUTES_AT, struct.unpack_from(">h", buf, ATTRIBUTES_AT)[0] | codec_bits)
    crc = crc32c.crc32c(bytes(buf[ATTRIBUTES_AT:]))
    struct.pack_into(">I", buf, CRC_AT, crc ^ 0x5A5A5A5A if spoil_crc else crc)
    return bytes(buf)


def produce_batch(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    """Append batch as is; returns its base offset. The broker may refuse it (an unknown codec, say)."""
    body = (struct.pack(">hhi", -1, -1, 10_000) + struct.pack(">i", 1) + _string(topic)
            + struct.pack(">ii", 1, partition) + struct.pack(">i", len(batch)) + batch)
    data = _call(bootstrap, 0, 3, body)
    pos = 4 + 2 + struct.unpack_from(">h", data, 4)[0] + 4  # topics array length, topic name, partitions length
    _, error, base_offset = struct.unpack_from(">ihq", data, pos)
    if error:
        raise RuntimeError(f"the broker refused the batch with error code {error}")
    return int(base_offset)


def batch_codecs(bootstrap: str, topic: str, partition: int, end: int) -> list[str]:
    """The codec of every batch of a partition up to end, read from the raw fetch response."""
    codecs: list[str] = []
    offset = 0
    while offset < end:
        records = _fetch(bootstrap, topic, partition, offset)
        batches = list(_batches(records))
        if not batches:
            raise RuntimeError(f"no batch at {topic}-{partition}@{offset}")
        for base_offset, attributes, last_delta in batches:
            codecs.append(CODEC_NAMES.get(attributes & 0x07, str(attributes & 0x07)))
            offset = base_offset + last_delta + 1
    return codecs


def _fetch(bootstrap: str, topic: str, partition: int, offset: int) -> bytes:
    body = (struct.pack(">iiiib", -1, 500, 1, 64 << 20, 0) + struct.pack(">i", 1) + _string(topic)
            + struct.pack(">iiqi", 1, partition, offset, 32 << 20))
    data = _call(bootstrap, 1, 4, body)
    pos = 4 + 4  # throttle time, topics array length
    pos += 2 + struct.unpack_from(">h", data, pos)[0] + 4  # topic name, partitions array length
    _, error, _, _, aborted = struct.unpack_from(">ihqqi", data, pos)
    if error:
        raise RuntimeError(f"fetch of {topic}-{partition}@{offset} failed with error code {error}")
    pos += 4 + 2 + 8 + 8 + 4 + max(aborted, 0) * 16
    size = struct.unpack_from(">i", data, pos)[0]
    return data[pos + 4:pos + 4 + max(size, 0)]


def _batches(records: bytes) -> Iterator[tuple[int, int, int]]:
    pos = 0
    while pos + HEADER_SIZE <= len(records):
        base_offset, length = struct.unpack_from(">qi", records, pos)
        if pos + 12 + length > len(records):
            return
        attributes, last_delta = struct.unpack_from(">hi", records, pos + ATTRIBUTES_AT)
        yield base_offset, attributes, last_delta
        pos += 12 + length


def _call(bootstrap: str, api_key: int, version: int, body: bytes) -> bytes:
    host, port = bootstrap.rsplit(":", 1)
    request = struct.pack(">hhi", api_key, version, 1) + _string("kbridge-tests") + body
    with socket.create_connection((host, int(port)), timeout=15) as conn:
        conn.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read(conn, 4))[0]
        return _read(conn, size)[4:]  # without the correlation id


def _read(conn: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw
