"""kbridge dlq replay: send dead-lettered messages back to the topic they came from.

Replay is itself at least once: it reads the dead-letter topic in its own consumer
group (<client_id>_dlq_replay) and commits a dead letter only after its origin
topic acknowledged the copy, so a replay that is interrupted picks up where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata

from .config import Settings
from .dlq import HEADER_PREFIX, ORIGIN_TOPIC
from .errors import KBridgeError

log = logging.getLogger("kbridge.replay")

JOIN_TIMEOUT = 60.0


@dataclass
class ReplayResult:
    replayed: int = 0
    skipped: int = 0  # no origin header: not a kbridge dead letter


def replay(settings: Settings, dlq_topic: str, limit: int | None = None, idle: float = 3.0) -> ReplayResult:
    """Replay up to limit dead letters; stops once the topic has been idle for idle seconds."""
    consumer = KafkaConsumer(
        **settings.consumer_config(),
        group_id=f"{settings.client_id}_dlq_replay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = KafkaProducer(**{"acks": "all", **settings.producer_config()})
    result = ReplayResult()
    try:
        if dlq_topic not in consumer.topics():
            raise KBridgeError(f"dead-letter topic {dlq_topic!r} does not exist; `kbridge info` lists each route's dlq")
        consumer.subscribe([dlq_topic])
        join_deadline = time.monotonic() + JOIN_TIMEOUT
        last_record: float | None = None  # the idle clock starts once the group has assigned partitions
        while limit is None or result.replayed + result.skipped < limit:
            room = 500 if limit is None else min(500, limit - result.replayed - result.skipped)
            polled = consumer.poll(timeout_ms=500, max_records=room)
            if last_record is None:
                if not consumer.assignment():
                    if time.monotonic() > join_deadline:
                        raise KBridgeError(f"no partitions of {dlq_topic!r} assigned within {JOIN_TIMEOUT:.0f}s; "
                                           "is another replay running in the same group?")
                    continue
                last_record = time.monotonic()
            if not polled:
                if time.monotonic() - last_record > idle:
                    break
                continue
            last_record = time.monotonic()
            for tp, records in polled.items():
                for record in records:
                    _replay_one(producer, record, result)
                consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)})
    finally:
        producer.close(timeout=10)
        consumer.close(autocommit=False)
    return result


def _replay_one(producer: KafkaProducer, record: Any, result: ReplayResult) -> None:
    headers = record.headers or []
    origin = dict(headers).get(ORIGIN_TOPIC)
    if not origin:
        log.warning("skipping %s-%d@%d: it has no %s header", record.topic, record.partition, record.offset,
                    ORIGIN_TOPIC)
        result.skipped += 1
        return
    kept = [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]
    producer.send(origin.decode("utf-8"), value=record.value, key=record.key, headers=kept).get(timeout=30)
    result.replayed += 1

