"""Records the Kafka client cannot decode (delivery rule 7): the lenient batch reader, the fetcher
guard against kafka-python's real fetcher, and the listener's handling with a stand-in guard."""

from __future__ import annotations

import json
import struct
import threading
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import crc32c
import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import CompletedFetch
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import FetchResponse
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder

from kbridge import BaseConsumer, KBridge
from kbridge.listener import decoding, salvage
from kbridge.listener.decoding import DecodeFailure, DecodeGuard, IncompatibleKafkaClient
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.salvage import Unreadable, read_batch
from kbridge.listener.undecodable import Salvaged, Wait, plan
from kbridge.params import Params, json_deserializer
from kbridge.runtime import Runtime
from tests.raw_headers import RawName

TP = TopicPartition("users", 0)
OTHER = TopicPartition("users", 1)
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def batch(
    records: list[Record], base_offset: int = 0, codec: int = 0, attributes: int = 0, crc_ok: bool = True,
    mutate: Callable[[bytearray], None] | None = None,
) -> bytes:
    """A v2 record batch as a producer writes it; attributes OR-ed in, mutated, and the CRC recomputed (or spoiled)."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, (key, value, headers) in enumerate(records):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=key, value=value, headers=headers)
    buf = bytearray(builder.build())
    struct.pack_into(">q", buf, 0, base_offset)
    struct.pack_into(">h", buf, 21, struct.unpack_from(">h", buf, 21)[0] | attributes)
    if mutate is not None:
        mutate(buf)
    crc = crc32c.crc32c(bytes(buf[21:]))
    struct.pack_into(">I", buf, 17, crc if crc_ok else crc ^ 0xFFFF)
    return bytes(buf)


def plain(n: int, bad_at: int | None = None) -> list[Record]:
    out: list[Record] = []
    for i in range(n):
        headers = [("trace", f"t{i}".encode())]
        if i == bad_at:
            headers += [(RawName(b"\xff\xfebad"), b"lost"), ("after", b"kept")]
        out.append((f"k{i}".encode(), json.dumps({"n": i}).encode(), headers))
    return out


# -- the lenient reader ---------------------------------------------------------------------------


def test_a_clean_batch_reads_from_the_position_on_with_keys_headers_and_tombstones() -> None:
    records = plain(3) + [(b"gone", None, [])]
    got = read_batch(batch(records, base_offset=10), "users", 0, 11)
    assert got is not None and got.next_offset == 14 and not got.transactional
    assert [(r.offset, r.key, r.value, r.problem) for r in got.records] == [
        (11, b"k1", b'{"n": 1}', None), (12, b"k2", b'{"n": 2}', None), (13, b"gone", None, None),
    ]
    assert got.records[0].headers == [("trace", b"t1")]
    assert got.records[0].timestamp == 1_700_000_000_001


def test_a_header_name_that_is_not_utf8_is_named_and_the_other_headers_kept() -> None:
    got = read_batch(batch(plain(3, bad_at=1)), "users", 0, 0)
    assert got is not None
    bad = got.records[1]
    assert bad.problem == "header 2 of 3 has a name that is not UTF-8: b'\\xff\\xfebad'"
    assert bad.headers == [("trace", b"t1"), ("after", b"kept")]
    assert (bad.key, bad.value) == (b"k1", b'{"n": 1}')
    assert [r.problem for r in got.records] == [None, bad.problem, None]


@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=["gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec_reads(codec: int) -> None:
    raw = batch(plain(50, bad_at=7), codec=codec)
    assert raw[22] & 0x07 == codec  # the builder compressed it (it does not when that saves nothing)
    got = read_batch(raw, "users", 0, 5)
    assert got is not None and [r.offset for r in got.records] == list(range(5, 50))
    assert [r.offset for r in got.records if r.problem] == [7]


def test_the_batch_holding_the_position_is_found_among_several() -> None:
    raw = batch(plain(3), base_offset=0) + batch(plain(4, bad_at=2), base_offset=3) + batch(plain(2), base_offset=7)
    got = read_batch(raw, "users", 0, 5)
    assert got is not None and [r.offset for r in got.records] == [5, 6] and got.next_offset == 7
    assert read_batch(raw, "users", 0, 9) is None
    assert read_batch(raw[:-5], "users", 0, 7) is None  # cut off at the end of the fetch


@pytest.mark.parametrize("make, reason", [
    (lambda: batch(plain(2), crc_ok=False), "fails its CRC check"),
    (lambda: batch(plain(2), attributes=5), "compression codec 5, which Kafka does not define"),
    (lambda: batch(plain(2), attributes=4), "zstd data of the record batch at offset 0 does not decompress"),
    (lambda: batch(plain(2), mutate=lambda buf: buf.__setitem__(61, 2)), "is 25 bytes, its length says 1"),
], ids=["crc", "unknown-codec", "garbage-zstd", "malformed"])
def test_a_batch_that_cannot_be_trusted_is_unreadable(make: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(Unreadable, match=reason):
        read_batch(make(), "users", 0, 0)


def test_a_missing_codec_library_is_unreadable_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    name, _, decode = salvage._CODECS[2]
    monkeypatch.setitem(salvage._CODECS, 2, (name, lambda: False, decode))
    with pytest.raises(Unreadable, match="snappy-compressed and no snappy library is installed"):
        read_batch(batch(plain(50), codec=2), "users", 0, 0)


def test_a_crc_mismatch_is_read_when_crc_checks_are_off() -> None:
    got = read_batch(batch(plain(2), crc_ok=False), "users", 0, 0, check_crc=False)
    assert got is not None and len(got.records) == 2


def test_control_batches_hold_no_records_and_log_append_time_is_the_batch_time() -> None:
    control = read_batch(batch(plain(1), base_offset=4, attributes=0x20), "users", 0, 4)
    assert control is not None and control.records == [] and control.next_offset == 5
    appended = read_batch(batch(plain(2), attributes=0x08), "users", 0, 0)
    assert appended is not None and {r.timestamp for r in appended.records} == {1_700_000_000_001}


def test_the_old_message_format_is_unreadable() -> None:
    builder = LegacyRecordBatchBuilder(magic=1, compression_type=0, batch_size=1 << 20)
    builder.append(0, timestamp=1, key=None, value=b"v")
    with pytest.raises(Unreadable, match="v0/v1"):
        read_batch(bytes(builder.build()), "users", 0, 0)


# -- the guard, on kafka-python's own fetcher -----------------------------------------------------


@pytest.fixture
def kafka_consumer() -> Any:
    """A real KafkaConsumer that never reaches a broker: fetch responses are handed to its fetcher."""
    consumer = KafkaConsumer(bootstrap_servers="127.0.0.1:1", api_version=(2, 8), group_id=None,
                             request_timeout_ms=1000, reconnect_backoff_ms=50)
    consumer.assign([TP, OTHER])
    consumer.seek(TP, 0)
    consumer.seek(OTHER, 0)
    yield consumer
    consumer.close()


def fetched(consumer: Any, tp: TopicPartition, raw: bytes, offset: int = 0) -> None:
    data = FetchResponse.FetchableTopicResponse.PartitionData(
        partition_index=tp.partition, error_code=0, high_watermark=99, records=raw)
    consumer._fetcher._completed_fetches.append(CompletedFetch(tp, offset, 11, data, None))


def polled_offsets(polled: dict[TopicPartition, list[Any]]) -> dict[int, list[int]]:
    return {tp.partition: [r.offset for r in records] for tp, records in polled.items()}


def test_the_guard_reports_where_decoding_failed_and_other_partitions_keep_flowing(kafka_consumer: Any) -> None:
    guard = DecodeGuard(kafka_consumer)
    bad = batch(plain(3, bad_at=1))
    fetched(kafka_consumer, TP, bad)
    fetched(kafka_consumer, OTHER, batch(plain(2)))
    results = [guard.poll(0, 10) for _ in range(3)]  # unguarded, the second poll() never returns
    assert polled_offsets(results[0][0]) == {0: [0]}
    [failure] = results[0][1]
    assert (failure.tp, failure.offset, failure.raw) == (TP, 1, bad)
    assert isinstance(failure.error, CorruptRecordError)
    assert results[1] == ({}, [])  # kafka-python raising the same failure again is not a new one
    assert polled_offsets(results[2][0]) == {1: [0, 1]}


def test_a_batch_failing_at_its_start_raises_nothing_and_is_fetched_again_after_a_seek(kafka_consumer: Any) -> None:
    guard = DecodeGuard(kafka_consumer)
    fetched(kafka_consumer, TP, batch(plain(2), crc_ok=False))
    polled, [failure] = guard.poll(0, 10)
    assert polled == {} and failure.offset == 0 and "crc" in str(failure.error)
    kafka_consumer.seek(TP, 2)
    fetched(kafka_consumer, TP, batch(plain(1), base_offset=2), offset=2)
    assert polled_offsets(guard.poll(0, 10)[0]) == {0: [2]}


def test_a_codec_without_its_library_is_a_failure_to_hold_not_a_crash(
    kafka_consumer: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kafka import codec

    raw = batch(plain(50), codec=4)
    monkeypatch.setattr(codec, "has_zstd", lambda: False)  # as before zstandard is installed
    name, _, decode = salvage._CODECS[4]
    monkeypatch.setitem(salvage._CODECS, 4, (name, lambda: False, decode))
    fetched(kafka_consumer, TP, raw)
    polled, [failure] = DecodeGuard(kafka_consumer).poll(0, 10)
    assert polled == {} and type(failure.error).__name__ == "UnsupportedCodecError"
    step = plan(failure, {}, json_deserializer, 0.0)
    assert isinstance(step, Wait) and "zstd-compressed and no zstd library is installed" in step.reason


def test_other_errors_are_raised_as_before(kafka_consumer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = DecodeGuard(kafka_consumer)

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("not about decoding")

    monkeypatch.setattr(kafka_consumer, "poll", broken)
    with pytest.raises(RuntimeError, match="not about decoding"):
        guard.poll(0, 10)


def test_the_guard_refuses_a_kafka_python_whose_internals_moved(kafka_consumer: Any) -> None:
    decoding.check(kafka_consumer)  # the installed kafka-python is the one this was written against
    fetcher = kafka_consumer._fetcher

    class Moved:
        _fetcher = type("Fetcher", (), {"_parse_fetched_data": fetcher._parse_fetched_data})()

    with pytest.raises(IncompatibleKafkaClient, match=r"Fetcher._append is gone"):
        DecodeGuard(Moved())  # type: ignore[arg-type]

    class Renamed:
        _fetcher = type("Fetcher", (), {
            "_parse_fetched_data": fetcher._parse_fetched_data,
            "_append": lambda drained, partition_records, max_records, update_offsets: 0,
        })()

    with pytest.raises(IncompatibleKafkaClient, match=r"Fetcher._append takes"):
        DecodeGuard(Renamed())  # type: ignore[arg-type]


# -- what to do about a failure -------------------------------------------------------------------


def failure_at(offset: int, raw: bytes | None, error: Exception | None = None) -> DecodeFailure:
    return DecodeFailure(TP, offset, error or CorruptRecordError("Found invalid record structure"), raw)


def test_plan_salvages_a_readable_batch_and_refuses_only_the_undecodable_record() -> None:
    step = plan(failure_at(1, batch(plain(4, bad_at=2))), {}, json_deserializer, 0.0)
    assert isinstance(step, Salvaged) and step.resume_at == 4
    assert [m.offset for m in step.messages] == [1, 2, 3] and list(step.refused) == [2]
    assert "not UTF-8" in str(step.refused[2])


@pytest.mark.parametrize("config, raw, why", [
    ({}, None, "Found invalid record structure"),
    ({}, batch(plain(2), crc_ok=False), "fails its CRC check"),
    ({"value_deserializer": bytes.decode}, batch(plain(2, bad_at=0)), "deserializer"),
    ({"isolation_level": "read_committed"}, batch(plain(2, bad_at=0), attributes=0x10), "transactional"),
], ids=["no-bytes", "crc", "kafka-deserializer", "read-committed"])
def test_plan_holds_what_kbridge_cannot_read_whole(config: dict[str, Any], raw: bytes | None, why: str) -> None:
    step = plan(failure_at(0, raw), config, json_deserializer, 0.0)
    assert isinstance(step, Wait) and step.offset == 0 and why in step.reason


# -- the listener, with a stand-in guard ----------------------------------------------------------


ConsumerRecord = namedtuple("ConsumerRecord", "topic partition offset key value headers timestamp")


def record_at(tp: TopicPartition, offset: int) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, None, b"{}", [], 0)


class FakeGuard:
    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.results: list[tuple[dict[TopicPartition, list[Any]], list[DecodeFailure]]] = []

    def poll(self, timeout_ms: int, max_records: int) -> tuple[dict[TopicPartition, list[Any]], list[DecodeFailure]]:
        return self.results.pop(0) if self.results else ({}, [])


class FakeKafkaConsumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


class FakeDeadLetters:
    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, int, list[tuple[str, bytes | None]], bytes | None, str]] = []

    def send(self, topic: str, params: Params, error: BaseException, attempts: int, group_id: str) -> None:
        if self.down:
            raise ConnectionError("dead-letter produce not acknowledged")
        self.sent.append((topic, params.offset, params.header_list, params.raw_payload,
                          f"{type(error).__name__}: {error}"))


class Performs(BaseConsumer):
    performed: list[int] = []

    def perform(self) -> None:
        self.performed.extend(p.offset for p in self.params_batch)


class Listener:
    def __init__(self) -> None:
        self.app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
        self.dead = FakeDeadLetters()
        self.consumer_class = type("Users", (Performs,), {"performed": []})
        self.app.topic("users", consumer=self.consumer_class)
        self.proc = GroupProcessor(Runtime.of(self.app, self.dead), self.app.routes.groups["users"], threading.Event())
        self.kafka = FakeKafkaConsumer()
        self.guard = FakeGuard()
        self.proc.consumer = self.kafka  # type: ignore[assignment]
        self.proc._decoder = self.guard  # type: ignore[assignment]
        self.proc._backoff = lambda attempts: 0.0  # type: ignore[method-assign]  # retries are due at once
        self.events: list[tuple[str, dict[str, Any]]] = []
        for name in ("record.undecodable", "partition.held", "dead_letter"):
            self.app.monitor.subscribe(name, lambda event, payload: self.events.append((event, payload)))

    @property
    def performed(self) -> list[int]:
        return list(self.consumer_class.performed)

    def tick(self, *failures: DecodeFailure, polled: dict[TopicPartition, list[Any]] | None = None) -> None:
        self.guard.results.append((polled or {}, list(failures)))
        self.proc.tick()

    def actions(self) -> list[tuple[str, int, str]]:
        return [(e, p["offset"], p.get("action", "")) for e, p in self.events]


def test_an_undecodable_record_is_dead_lettered_in_order_and_the_partition_moves_past_it() -> None:
    lst = Listener()
    lst.tick(failure_at(1, batch(plain(5, bad_at=2))))
    assert lst.performed == [1, 3, 4]
    [(topic, offset, headers, value, error)] = lst.dead.sent
    assert (topic, offset, value) == ("users.dlq", 2, b'{"n": 2}')
    assert headers == [("trace", b"t2"), ("after", b"kept")]
    assert error.startswith("CorruptRecordError") and "not UTF-8: b'\\xff\\xfebad'" in error
    assert lst.kafka.seeks == [(TP, 5)] and lst.kafka.paused == set()
    assert lst.kafka.commits == [{TP: 5}]
    assert lst.actions() == [("record.undecodable", 2, "dead_lettered")]
    assert lst.proc.stats.dead_lettered == 1 and lst.proc.stats.fetched == 4


def test_an_unacknowledged_dead_letter_holds_the_partition_until_kafka_takes_it() -> None:
    lst = Listener()
    lst.dead.down = True
    lst.tick(failure_at(0, batch(plain(4, bad_at=1))))
    assert lst.performed == [0] and lst.kafka.paused == {TP} and lst.kafka.commits == [{TP: 1}]
    assert [m.offset for m in lst.proc._held[TP].messages] == [1, 2, 3]
    assert lst.actions() == [("partition.held", 1, "")]
    lst.tick()  # retried at once (no backoff in this test): still down
    assert lst.performed == [0] and len(lst.actions()) == 1  # one event per state change
    lst.dead.down = False
    lst.tick()
    assert lst.performed == [0, 2, 3] and [s[1] for s in lst.dead.sent] == [1]
    assert lst.kafka.paused == set() and TP not in lst.proc._held
    assert lst.kafka.commits[-1] == {TP: 4}


def test_an_unreadable_batch_holds_its_partition_and_is_fetched_again_now_and_then(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lst = Listener()
    corrupt = batch(plain(3), base_offset=7, crc_ok=False)
    caplog.set_level("WARNING", logger="kbridge.listener")
    lst.tick(failure_at(7, corrupt))
    assert lst.kafka.paused == {TP} and lst.kafka.seeks == [] and lst.dead.sent == []
    assert lst.actions() == [("record.undecodable", 7, "held"), ("partition.held", 7, "")]
    assert "fails its CRC check" in lst.events[0][1]["error"] + lst.events[1][1]["reason"]
    lst.tick()  # the retry resumes the partition; the client fetches the batch again
    assert lst.kafka.paused == set() and TP in lst.proc._refetching
    lst.tick(failure_at(7, corrupt), polled={OTHER: [record_at(OTHER, 0)]})
    assert lst.kafka.paused == {TP} and lst.proc._held[TP].attempts == 2
    assert lst.performed == [0]  # the other partition flows meanwhile
    assert len(lst.actions()) == 2  # one event and one log line per state change, not per retry
    assert sum("paused users-0" in r.getMessage() for r in caplog.records) == 1
    lst.tick()
    lst.tick(polled={TP: [record_at(TP, 7)]})  # the batch reads again
    assert TP not in lst.proc._refetching and lst.performed == [0, 7]
    assert any("resumed users-0" in r.getMessage() for r in caplog.records)


def down(route: object, messages: object) -> None:
    raise ConnectionError("broker down")


def test_a_failure_on_a_partition_held_for_earlier_messages_waits_for_that_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lst = Listener()
    lst.proc._backoff = lambda attempts: float("inf")  # type: ignore[method-assign]
    lst.proc.runtime.backend("inline").enqueue = down  # type: ignore[method-assign]
    lst.tick(polled={TP: [record_at(TP, 3)]})  # broker down: held at 3
    lst.tick(failure_at(4, batch(plain(3, bad_at=0), base_offset=4)))
    assert lst.kafka.seeks == [] and lst.dead.sent == [] and lst.proc._held[TP].offset == 3

