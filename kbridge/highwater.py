"""End offsets that can be trusted: the high watermark of a fetch response.

ListOffsets(LATEST) (KafkaConsumer.end_offsets) is not trustworthy on every
Kafka-protocol broker: Tansu answers the last record batch's base offset + 1, so a
topic with one batch of 100 records reports 1. The high watermark every fetch response
carries is right everywhere, so `dlq show` and `dlq replay` learn where a topic ends
by fetching once from each partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from .errors import KBridgeError

PROBE_TIMEOUT = 15.0


def partitions_of(consumer: KafkaConsumer, topic: str, hint: str) -> list[TopicPartition]:
    """The topic's partitions; a KBridgeError naming the topic if Kafka does not know it."""
    if topic not in consumer.topics():
        raise KBridgeError(f"topic {topic!r} does not exist in Kafka; {hint}")
    partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


def high_watermarks(
    settings_config: dict[str, Any], tps: Iterable[TopicPartition], timeout: float = PROBE_TIMEOUT
) -> dict[TopicPartition, int]:
    """One past the last offset of each partition, as the broker's fetch responses say it now.

    A consumer of its own, in no group, fetches from each partition's (approximate) end; its
    records are discarded, only the watermark is kept.
    """
    wanted = list(tps)
    if not wanted:
        return {}
    probe = KafkaConsumer(**{**settings_config, "group_id": None, "enable_auto_commit": False,
                             "auto_offset_reset": "latest", "fetch_max_wait_ms": 100})
    try:
        probe.assign(wanted)
        deadline = time.monotonic() + timeout
        marks: dict[TopicPartition, int] = {}
        while True:
            probe.poll(timeout_ms=100, max_records=1)
            marks = {tp: hw for tp in wanted if (hw := probe.highwater(tp)) is not None}
            if len(marks) == len(wanted):
                return marks
            if time.monotonic() > deadline:
                missing = ", ".join(f"{tp.topic}-{tp.partition}" for tp in wanted if tp not in marks)
                raise KBridgeError(f"Kafka did not answer a fetch from {missing} within {timeout:.0f}s")
    finally:
        probe.close(autocommit=False)
