"""Kafka chores for tests: topics, producing, and reading committed offsets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

# Tests want groups to form in ~3 s rather than kafka-python's default ~20 s.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | None],
    keys: Iterable[bytes | None] | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> dict[int, list[int]]:
    """Produce and wait for every ack; returns the offsets written, per partition."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        key_list = list(keys) if keys is not None else None
        futures = [
            producer.send(topic, value=v, key=key_list[i] if key_list else None, headers=headers)
            for i, v in enumerate(values)
        ]
        producer.flush()
        written: dict[int, list[int]] = {}
        for f in futures:
            md = f.get(timeout=30)
            written.setdefault(md.partition, []).append(md.offset)
        return written
    finally:
        producer.close()


def end_offsets(written: dict[int, list[int]], topic: str) -> dict[TopicPartition, int]:
    """End offsets from what was produced (Tansu's ListOffsets(LATEST) is not trustworthy)."""
    return {TopicPartition(topic, p): max(offs) + 1 for p, offs in written.items()}


def committed_offsets(bootstrap: str, group_id: str) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        result = admin.list_group_offsets({group_id: None})
    finally:
        admin.close()
    offsets = result.get(group_id, result) if isinstance(result, dict) else result
    return {tp: om.offset for tp, om in offsets.items() if om is not None and om.offset >= 0}


def wait_until(predicate, timeout: float, interval: float = 0.25, what: str = "condition", alive=()):  # type: ignore[no-untyped-def]
    """Poll predicate until truthy; fail early, with its log, if a process in alive exits."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in alive:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise AssertionError(
                    f"{proc.name} exited with code {proc.proc.returncode} while waiting for {what}; "
                    f"log:\n{proc.log()[-4000:]}"
                )
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    """Read a topic from the beginning until count records arrived (or timeout); no consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


class Stream(threading.Thread):
    """Produces values at a steady rate in the background, so faults hit a live stream.

    After join(), written holds the (partition, offset) of every value, in order.
    """

    def __init__(self, bootstrap: str, topic: str, values: list[bytes], rate: float) -> None:
        super().__init__(daemon=True, name=f"stream-{topic}")
        self.bootstrap, self.topic, self.values, self.rate = bootstrap, topic, values, rate
        self.placed: list[tuple[int, int]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all")
        try:
            started = time.monotonic()
            futures = []
            for i, value in enumerate(self.values):
                futures.append(producer.send(self.topic, value=value))
                ahead = started + (i + 1) / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush()
            self.placed = [(md.partition, md.offset) for md in (f.get(timeout=30) for f in futures)]
        except BaseException as exc:
            self.error = exc
        finally:
            producer.close()

    def written(self) -> dict[int, list[int]]:
        if self.error is not None:
            raise self.error
        out: dict[int, list[int]] = {}
        for partition, offset in self.placed:
            out.setdefault(partition, []).append(offset)
        return out
