"""Dead-lettering: the failed message's bytes, key and headers, plus where it came from and why.

A dead letter counts as handled only once Kafka acknowledged it, so a failed
dead-letter produce is an error the caller must retry, never a silent drop.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from kafka import KafkaProducer

from .params import Params

if TYPE_CHECKING:
    from .config import Settings
    from .instrumentation import Monitor

log = logging.getLogger("kbridge.dlq")

HEADER_PREFIX = "kbridge-"
ORIGIN_TOPIC = "kbridge-origin-topic"
ORIGIN_PARTITION = "kbridge-origin-partition"
ORIGIN_OFFSET = "kbridge-origin-offset"
ORIGIN_GROUP = "kbridge-origin-group"
ERROR_CLASS = "kbridge-error-class"
ERROR_MESSAGE = "kbridge-error-message"
ATTEMPTS = "kbridge-attempts"
FAILED_AT = "kbridge-failed-at"

MAX_ERROR_MESSAGE = 2000


def dead_letter_headers(
    params: Params, error: BaseException, attempts: int, group_id: str
) -> list[tuple[str, bytes | None]]:
    """The original headers (minus earlier kbridge ones) followed by this failure's."""
    kept = [(k, v) for k, v in params.headers.items() if not k.startswith(HEADER_PREFIX)]
    ours = {
        ORIGIN_TOPIC: params.topic,
        ORIGIN_PARTITION: str(params.partition),
        ORIGIN_OFFSET: str(params.offset),
        ORIGIN_GROUP: group_id,
        ERROR_CLASS: f"{type(error).__module__}.{type(error).__qualname__}",
        ERROR_MESSAGE: str(error)[:MAX_ERROR_MESSAGE],
        ATTEMPTS: str(attempts),
        FAILED_AT: datetime.now(timezone.utc).isoformat(),
    }
    return kept + [(k, v.encode("utf-8")) for k, v in ours.items()]


class DeadLetters:
    """One lazily created producer per process: kafka-python producers do not survive fork."""

    def __init__(self, settings: Settings, monitor: Monitor | None = None) -> None:
        self.settings = settings
        self.monitor = monitor  # the dead_letter event is emitted here, once Kafka acknowledged
        self._producer: KafkaProducer | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _get_producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None or self._pid != os.getpid():
                config = {"acks": "all", **self.settings.producer_config()}
                self._producer = KafkaProducer(**config)
                self._pid = os.getpid()
            return self._producer

    def send(self, topic: str, params: Params, error: BaseException, attempts: int, group_id: str) -> None:
        """Produce and wait for the acknowledgement; raises if Kafka did not take it.

        topic is the route-side name (e.g. route.dead_letter_topic); the topic mapper gives Kafka's.
        """
        future = self._get_producer().send(
            self.settings.topic_mapper.outgoing(topic),
            value=params.raw_payload,
            key=params.key,
            headers=dead_letter_headers(params, error, attempts, group_id),
        )
        metadata = future.get(timeout=self.settings.dead_letter_timeout)
        log.error(
            "dead-lettered %s-%d@%d to %s-%d@%d after %d attempt(s): %s: %s",
            params.topic, params.partition, params.offset, topic, metadata.partition, metadata.offset,
            attempts, type(error).__name__, str(error)[:300],
        )
        if self.monitor is not None:
            self.monitor.instrument(
                "dead_letter", route=f"{group_id}/{params.topic}", group_id=group_id, topic=params.topic,
                partition=params.partition, offset=params.offset, dead_letter_topic=topic,
                error=f"{type(error).__name__}: {error}", attempts=attempts,
            )

    def close(self) -> None:
        with self._lock:
            if self._producer is not None and self._pid == os.getpid():
                self._producer.close(timeout=5)
            self._producer = None
