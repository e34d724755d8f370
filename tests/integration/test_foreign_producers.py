"""Records kafka-python did not write (librdkafka, as most production producers are not Python), and
records the Kafka client cannot decode (delivery rule 7), through a real listener, celery worker and broker.

Producers: confluent-kafka (librdkafka) with every codec; kafka-python with a header name
that is not UTF-8 (Kafka allows any bytes there, kafka-python refuses to read it); raw
Produce requests for batches no client writes (a spoiled CRC, data that claims a codec
it is not in).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kafka import KafkaProducer, TopicPartition

from kbridge import dlq
from kbridge.testing import processes
from kbridge.testing.kafka import end_offsets, wait_until
from kbridge.testing.processes import Process
from tests.raw_headers import RawName

from .conftest import PipelineRun
from .kafka_wire import batch_codecs, produce_batch, record_batch

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration

APP = "tests.apps.foreign:app"
CELERY_APP = "tests.apps.foreign:celery_app"
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
BIG = 300 * 1024


@dataclass
class Sent:
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


@pytest.fixture(scope="module")
def worker(pipeline: PipelineRun) -> Iterator[Process]:
    proc = processes.celery_worker(CELERY_APP, pipeline.env, [f"kbridge-foreign-{pipeline.run}"]).start()
    try:
        proc.wait_for_log("ready.", timeout=60)
        yield proc
    finally:
        proc.stop()


def listen(pipeline: PipelineRun, topic: str) -> Process:
    return processes.listener(APP, pipeline.env, groups=[topic], name=f"listener-{topic}").start()


def librdkafka(
    pipeline: PipelineRun, topic: str, messages: list[Sent], codec: str = "none", partition: int | None = None
) -> list[tuple[int, int]]:
    """Produce with confluent-kafka, batched (linger) and idempotent; returns each message's (partition, offset)."""
    producer = confluent_kafka.Producer({
        "bootstrap.servers": pipeline.kafka.bootstrap, "compression.type": codec, "linger.ms": 50,
        "enable.idempotence": True, "message.max.bytes": 4 << 20,
    })
    placed: list[tuple[int, int] | None] = [None] * len(messages)
    errors: list[str] = []

    def delivered(index: int):  # type: ignore[no-untyped-def]
        def report(err, msg) -> None:  # type: ignore[no-untyped-def]
            if err is not None:
                errors.append(str(err))
            else:
                placed[index] = (msg.partition(), msg.offset())
        return report

    for i, m in enumerate(messages):
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=m.value, key=m.key, headers=m.headers or None, on_delivery=delivered(i),
                         **extra)
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors
    assert all(p is not None for p in placed)
    return [p for p in placed if p is not None]


def stream(codec: str, n: int = 30) -> list[Sent]:
    out = [Sent(json.dumps({"n": i, "codec": codec}).encode(), f"{codec}-{i}".encode(),
                [("codec", codec.encode()), ("dup", b"1"), ("dup", b"2"), ("empty", None)])
           for i in range(n)]
    out.insert(n // 2, Sent(None, f"{codec}-tombstone".encode()))
    blob = base64.b64encode(os.urandom(BIG)).decode()  # random, so it stays large compressed too
    out.append(Sent(json.dumps({"n": -1, "blob": blob}).encode(), f"{codec}-big".encode(), [("size", b"big")]))
    return out


def written(placed: list[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for partition, offset in placed:
        out.setdefault(partition, []).append(offset)
    return out


def stop(listener: Process) -> int | None:
    rc = listener.stop()
    assert rc == 0, listener.log()[-3000:]
    return rc


def test_every_codec_from_librdkafka_is_performed_and_committed(pipeline: PipelineRun, worker: Process) -> None:
    topic = pipeline.topic("codecs")
    pipeline.create(topic, 3)
    sent: dict[tuple[int, int], Sent] = {}
    for codec in CODECS:
        messages = stream(codec)
        sent.update(zip(librdkafka(pipeline, topic, messages, codec), messages, strict=True))
    ends = end_offsets(written(list(sent)), topic)
    codecs_used = {c for tp, end in ends.items()
                   for c in batch_codecs(pipeline.kafka.bootstrap, topic, tp.partition, end)}
    assert codecs_used == set(CODECS), f"librdkafka wrote batches in {codecs_used}"

    listener = listen(pipeline, topic)
    started = time.monotonic()
    try:
        wait_until(lambda: set(pipeline.seen(topic)) >= set(sent), 60, what=f"{len(sent)} performs",
                   alive=[listener, worker])
        wait_until(lambda: pipeline.committed(topic) == ends, 30, what=f"committed {ends}", alive=[listener])
    finally:
        stop(listener)
    seen, extra = pipeline.seen(topic), pipeline.extra(topic)
    print(f"\n[codecs] produced={len(sent)} performed={len(seen)} duplicated={sum(c - 1 for c in seen.values())} "
          f"lost={len(set(sent) - set(seen))} codecs={sorted(codecs_used)} in {time.monotonic() - started:.1f}s")
    assert set(seen) == set(sent)
    for where, message in sent.items():
        got = json.loads(extra[where])
        assert got["key"] == message.key.decode()  # type: ignore[union-attr]
        assert got["headers"] == [[k, None if v is None else v.decode()] for k, v in message.headers]
        if message.value is None:
            assert got["payload_none"] and got["raw_none"], where
        else:
            assert got["raw_len"] == len(message.value) and got["n"] == json.loads(message.value)["n"]
    assert sum((json.loads(extra[w])["raw_len"] or 0) > BIG for w in sent) == len(CODECS)


def test_a_header_name_that_is_not_utf8_is_dead_lettered_and_every_other_record_performed(
    pipeline: PipelineRun, worker: Process,
) -> None:
    topic = pipeline.topic("headers")
    pipeline.create(topic, 3)
    placed: list[tuple[int, int]] = []
    for partition in range(3):
        placed += librdkafka(pipeline, topic, stream("lz4", 10)[:10], "lz4", partition)
    # kafka-python, lz4, one batch: the bad record sits between good ones in the same batch.
    producer = KafkaProducer(bootstrap_servers=pipeline.kafka.bootstrap, linger_ms=200, compression_type="lz4")
    futures = []
    for i in range(9):
        headers = [("trace", f"t{i}".encode())]
        if i == 4:
            headers += [(RawName(b"\xff\xfeX-Bad"), b"lost"), ("after", b"kept")]
        futures.append(producer.send(topic, value=json.dumps({"n": 100 + i}).encode(), key=f"kp{i}".encode(),
                                     headers=headers, partition=0))
    producer.flush()
    kp = [(md.partition, md.offset) for md in (f.get(timeout=30) for f in futures)]
    producer.close()
    bad = kp[4]
    for partition in range(3):
        placed += librdkafka(pipeline, topic, stream("zstd", 10)[:10], "zstd", partition)
    placed += kp
    performed = set(placed) - {bad}
    ends = end_offsets(written(placed), topic)

    listener = listen(pipeline, topic)
    try:
        wait_until(lambda: set(pipeline.seen(topic)) >= performed, 60, what=f"{len(performed)} performs",
                   alive=[listener, worker])
        wait_until(lambda: pipeline.committed(topic) == ends, 30, what=f"committed {ends}", alive=[listener])
        [letter] = pipeline.dead_letters(topic, 1)
        assert listener.proc is not None and listener.proc.poll() is None
    finally:
        log = listener.log()
        stop(listener)
    seen = pipeline.seen(topic)
    print(f"\n[non-UTF-8 header name] produced={len(placed)} performed={len(seen)} dead_lettered=1 "
          f"lost={len(performed - set(seen))} bad={bad}")
    assert set(seen) == performed
    headers = dict(letter.headers)
    assert (headers[dlq.ORIGIN_TOPIC], headers[dlq.ORIGIN_PARTITION], headers[dlq.ORIGIN_OFFSET]) == (
        topic.encode(), str(bad[0]).encode(), str(bad[1]).encode())
    assert headers[dlq.ERROR_CLASS] == b"kafka.errors.CorruptRecordError"
    assert b"not UTF-8" in headers[dlq.ERROR_MESSAGE] and b"\\xff\\xfeX-Bad" in headers[dlq.ERROR_MESSAGE]
    assert (letter.value, letter.key) == (b'{"n": 104}', b"kp4")
    assert [h for h in letter.headers if not h[0].startswith(dlq.HEADER_PREFIX)] == [
        ("trace", b"t4"), ("after", b"kept")]
    assert log.count("cannot be decoded by the Kafka client") == 1, log[-3000:]
    assert "Traceback" not in log


def test_an_undecodable_batch_holds_only_its_partition(pipeline: PipelineRun, worker: Process) -> None:
    topic = pipeline.topic("corrupt")
    pipeline.create(topic, 3)
    bootstrap = pipeline.kafka.bootstrap
    before: list[tuple[int, int]] = []
    for partition in range(3):
        before += librdkafka(pipeline, topic, stream("gzip", 10)[:10], "gzip", partition)
    crc_at = produce_batch(bootstrap, topic, 1, record_batch([b'{"n": 1}'] * 3, spoil_crc=True))
    zstd_at = produce_batch(bootstrap, topic, 2, record_batch([b'{"n": 2}'] * 3, codec_bits=4))  # not zstd data
    after: list[tuple[int, int]] = []
    for partition in range(2):  # partition 2 ends with its bad batch: `kbridge lag` reads up to it
        after += librdkafka(pipeline, topic, stream("snappy", 10)[:10], "snappy", partition)
    flowing = set(before) | {p for p in after if p[0] == 0}
    held = {1: crc_at, 2: zstd_at}
    want_committed = {TopicPartition(topic, 0): max(o for p, o in after if p == 0) + 1,
                      **{TopicPartition(topic, p): o for p, o in held.items()}}

    listener = listen(pipeline, topic)
    try:
        wait_until(lambda: set(pipeline.seen(topic)) >= flowing, 60, what=f"{len(flowing)} performs",
                   alive=[listener, worker])
        wait_until(lambda: pipeline.committed(topic) == want_committed, 30, what=f"committed {want_committed}",
                   alive=[listener])
        time.sleep(5)  # a few retries of the held partitions (enqueue_backoff_max=2 s)
        assert listener.proc is not None and listener.proc.poll() is None
        lag = lag_by_partition(pipeline, topic)
        assert pipeline.committed(topic) == want_committed
    finally:
        log = listener.log()
        stop(listener)
    seen = pipeline.seen(topic)
    print(f"\n[undecodable batches] performed={len(seen)} held={{1: {crc_at}, 2: {zstd_at}}} lag={lag}")
    assert set(seen) == flowing  # nothing after a held batch is skipped to
    assert lag == {0: 0, 1: 3 + 10, 2: 3}
    assert log.count(f"paused {topic}-1 at offset {crc_at}: cannot decode") == 1, log[-3000:]
    assert log.count(f"paused {topic}-2 at offset {zstd_at}: cannot decode") == 1, log[-3000:]
    assert "fails its CRC check" in log and "zstd data of the record batch" in log
    assert "Traceback" not in log


def lag_by_partition(pipeline: PipelineRun, topic: str) -> dict[int, int]:
    """`kbridge lag` as an operator runs it; the lag column of each of topic's partitions."""
    out = subprocess.run(
        [sys.executable, "-m", "kbridge", "lag", "--app", APP, "--consumer-groups", topic],
        env=processes.child_env(pipeline.env), capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines()]
    return {int(row[2]): int(row[5]) for row in rows if len(row) == 6 and row[1] == topic}
