"""`kbridge lag`: per partition, how far each consumer group's committed offset is behind the end.

Committed offsets come from the group coordinator (KafkaAdminClient.list_group_offsets).
End offsets come from the high watermark that fetch responses carry, not from
ListOffsets(LATEST) (`end_offsets()`): Tansu 0.6 answers that with the last record
batch's base offset + 1, so a topic holding one batch of 100 records would look 99
records short. Only a partition whose fetch gave no high watermark within the timeout
falls back to ListOffsets, and the result says so (end_source).

A partition the listener holds because the Kafka client cannot decode a batch of it
shows here with its lag, which stops shrinking: its committed offset stays at that
batch. Reading the high watermark may meet the same batch; that is not an error here.

Everything here only reads: no group is joined, nothing is committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from .config import Settings
from .errors import KBridgeError
from .listener.decoding import DecodeGuard
from .routing import ConsumerGroup
from .routing.mapper import kafka_names
from .topics import admin_config

HIGH_WATERMARK = "high watermark"
LIST_OFFSETS = "ListOffsets"


@dataclass(frozen=True)
class PartitionLag:
    group_id: str
    topic: str  # the Kafka name
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int | None  # None: not known (the topic is missing, or Kafka did not answer in time)
    start: int | None = None  # the earliest offset still in the partition
    end_source: str = HIGH_WATERMARK
    start_from_beginning: bool = True

    @property
    def lag(self) -> int | None:
        """Records the group has yet to handle; never committed: what it will read when it starts."""
        if self.end is None:
            return None
        if self.committed is not None:
            return max(0, self.end - self.committed)
        if not self.start_from_beginning:
            return 0  # it will start at the end
        return max(0, self.end - (self.start or 0))


@dataclass
class LagReport:
    partitions: list[PartitionLag]  # sorted by group, topic, partition
    missing_topics: list[tuple[str, str]]  # (group_id, Kafka topic) routed but not in Kafka


def group_lag(settings: Settings, groups: Iterable[ConsumerGroup], timeout: float = 10.0) -> LagReport:
    """Lag of every partition of every routed topic of groups."""
    groups = list(groups)
    try:
        admin = KafkaAdminClient(**{"bootstrap_timeout_ms": 10_000, **admin_config(settings)})
    except KafkaError as exc:
        raise KBridgeError(f"cannot reach Kafka at {settings.kafka.get('bootstrap_servers')!r}: {exc}") from exc
    consumer: KafkaConsumer | None = None
    try:
        consumer = KafkaConsumer(
            **{"bootstrap_timeout_ms": 10_000, **settings.consumer_config()}, group_id=None, enable_auto_commit=False,
            allow_auto_create_topics=False,  # asking about a missing topic must not create it
        )
        wanted: dict[str, list[tuple[TopicPartition, bool]]] = {}
        missing: list[tuple[str, str]] = []
        for group in groups:
            topics = kafka_names(settings.topic_mapper, group.topics)
            for kafka_topic, route_name in topics.items():
                partitions = consumer.partitions_for_topic(kafka_topic) or set()
                if not partitions:
                    missing.append((group.id, kafka_topic))
                from_start = group.topics[route_name].start_from_beginning
                wanted.setdefault(group.id, []).extend(
                    (TopicPartition(kafka_topic, p), from_start) for p in sorted(partitions)
                )
        every = sorted({tp for tps in wanted.values() for tp, _ in tps})
        ends, sources = end_offsets(consumer, every, timeout)
        starts = consumer.beginning_offsets(every) if every else {}
        found: list[PartitionLag] = []
        for group_id, tps in wanted.items():
            committed = committed_offsets(admin, group_id)
            found.extend(
                PartitionLag(group_id, tp.topic, tp.partition, committed.get(tp), ends.get(tp), starts.get(tp),
                             sources.get(tp, HIGH_WATERMARK), from_start)
                for tp, from_start in tps
            )
        return LagReport(sorted(found, key=lambda r: (r.group_id, r.topic, r.partition)), missing)
    except KafkaError as exc:
        raise KBridgeError(f"could not read offsets from Kafka: {type(exc).__name__}: {exc}") from exc
    finally:
        if consumer is not None:
            consumer.close()
        admin.close()


def committed_offsets(admin: KafkaAdminClient, group_id: str) -> dict[TopicPartition, int]:
    """One group at a time: OffsetFetch for several groups at once needs Kafka 3.0+."""
    result: dict[str, dict[TopicPartition, Any]] = admin.list_group_offsets({group_id: None})
    offsets = result.get(group_id, {})
    return {tp: om.offset for tp, om in offsets.items() if om is not None and om.offset >= 0}


def end_offsets(
    consumer: KafkaConsumer, tps: list[TopicPartition], timeout: float
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, str]]:
    """High watermarks from fetch responses; ListOffsets(LATEST) for those still unknown after timeout.

    The consumer is positioned at ListOffsets' end first: on Kafka that is the high
    watermark (an empty fetch), on Tansu at most one batch before it.
    """
    if not tps:
        return {}, {}
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    guard = DecodeGuard(consumer)  # a batch that cannot be decoded still brings its high watermark
    deadline = time.monotonic() + timeout
    ends: dict[TopicPartition, int] = {}
    while time.monotonic() < deadline:
        guard.poll(timeout_ms=200, max_records=1)
        ends = {tp: hw for tp in tps if (hw := consumer.highwater(tp)) is not None}
        if len(ends) == len(tps):
            return ends, {}
    missing = [tp for tp in tps if tp not in ends]
    listed = consumer.end_offsets(missing)
    ends.update(listed)
    return ends, dict.fromkeys(listed, LIST_OFFSETS)
