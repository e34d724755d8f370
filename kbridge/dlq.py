"""Dead-lettering: the failed message's bytes, key and headers, plus where it came from and why.

A dead letter counts as handled only once Kafka acknowledged it, so a failed
dead-letter produce is an error the caller must retry, never a silent drop.

Some refusals no retry can fix: a letter larger than Kafka takes (a record near the
limit grows by kbridge's headers), a record batch Kafka calls invalid, a topic name it
refuses. Such a letter is sent again cut down to a preview with its origin coordinates,
so the original stays findable in the origin topic; if even that is refused, the
preview goes to the app's fixed fallback topic, '<client_id>.unroutable'.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kafka import KafkaProducer
from kafka.errors import (
    InvalidRecordError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from .errors import PayloadValidationError
from .params import HeaderList, Params

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
TRUNCATED = "kbridge-truncated"  # on a cut-down letter: what was cut, and why
INTENDED_TOPIC = "kbridge-intended-topic"  # on a letter in the fallback topic: where it should have gone
TASK_ID = "kbridge-task-id"  # on an untrusted task's letter
REPLAYS = "kbridge-replays"  # how often `dlq replay` sent this message back; kept when it is dead-lettered again
VALIDATION_ERRORS = "kbridge-validation-errors"  # payload_model: JSON [{"path": ..., "message": ...}, ...]

MAX_ERROR_MESSAGE = 2000
PREVIEW_BYTES = 16 * 1024  # what a cut-down letter keeps of the value and of the key
# Kafka's default message.max.bytes is about 1 MB. The producer's own check must not refuse
# what the broker might take, so the dead-letter producer allows more and lets Kafka decide.
DEAD_LETTER_MAX_REQUEST_SIZE = 16 * 1024 * 1024
# UnicodeEncodeError: a header name that is not valid text (a lone surrogate from a task's JSON, say).
UNFIXABLE = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError, InvalidTopicError,
             UnicodeEncodeError)
UNROUTABLE_SUFFIX = ".unroutable"


@dataclass(frozen=True)
class Failure:
    """Why a message is dead-lettered: an error's class and message, which survive a trip through a task."""

    error_class: str
    message: str
    field_errors: tuple[tuple[str, str], ...] = ()  # a payload that did not validate: (path, message) pairs

    @classmethod
    def of(cls, error: BaseException | Failure) -> Failure:
        if isinstance(error, Failure):
            return error
        try:
            message = str(error)
        except Exception:  # an exception whose __str__ raises still gets its letter
            message = repr(error.args)
        fields = tuple(error.errors) if isinstance(error, PayloadValidationError) else ()
        return cls(f"{type(error).__module__}.{type(error).__qualname__}", message, fields)

    @property
    def short_class(self) -> str:
        return self.error_class.rsplit(".", 1)[-1]

    def to_wire(self) -> dict[str, str]:
        return {"error_class": self.error_class, "message": self.message}

    def __str__(self) -> str:
        return f"{self.short_class}: {self.message}"


def unroutable_topic(client_id: str) -> str:
    """The one fixed topic for what cannot be trusted or routed: never a topic named by the data itself."""
    return f"{client_id}{UNROUTABLE_SUFFIX}"


def dead_letter_headers(
    params: Params, error: BaseException | Failure, attempts: int, group_id: str
) -> HeaderList:
    """The original headers (minus earlier kbridge ones but the replay count), repeats and order kept, followed
    by this failure's. The replay count survives so that replay can tell a message it keeps sending back."""
    failure = Failure.of(error)
    kept = [(k, v) for k, v in params.header_list if not k.startswith(HEADER_PREFIX) or k == REPLAYS]
    ours = {
        ORIGIN_TOPIC: params.topic,
        ORIGIN_PARTITION: str(params.partition),
        ORIGIN_OFFSET: str(params.offset),
        ORIGIN_GROUP: group_id,
        ERROR_CLASS: failure.error_class,
        ERROR_MESSAGE: failure.message[:MAX_ERROR_MESSAGE],
        ATTEMPTS: str(attempts),
        FAILED_AT: datetime.now(timezone.utc).isoformat(),
    }
    if failure.field_errors:
        ours[VALIDATION_ERRORS] = json.dumps([{"path": p, "message": m} for p, m in failure.field_errors])
    return kept + [(k, _text(v)) for k, v in ours.items()]


def _text(value: str) -> bytes:
    """kbridge's own header values: always encodable, whatever text an error message carries."""
    return value.encode("utf-8", "backslashreplace")


def _preview(raw: bytes | None) -> bytes | None:
    return raw if raw is None or len(raw) <= PREVIEW_BYTES else raw[:PREVIEW_BYTES]


def _size(raw: bytes | None) -> int:
    return 0 if raw is None else len(raw)


class DeadLetters:
    """One lazily created producer per process: kafka-python producers do not survive fork."""

    def __init__(self, settings: Settings, monitor: Monitor | None = None) -> None:
        self.settings = settings
        self.monitor = monitor  # the dead_letter event is emitted here, once Kafka acknowledged
        self._producer: KafkaProducer | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def has_producer(self) -> bool:
        """Whether this process already opened a connection (a swarm refuses to fork one)."""
        return self._producer is not None

    def _get_producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None or self._pid != os.getpid():
                config = {
                    "acks": "all",
                    # Waiting for metadata of a topic Kafka will not create must end within our own timeout.
                    "max_block_ms": int(self.settings.dead_letter_timeout * 1000),
                    **self.settings.producer_config(),
                }
                config["max_request_size"] = max(DEAD_LETTER_MAX_REQUEST_SIZE, config.get("max_request_size", 0))
                self._producer = KafkaProducer(**config)
                self._pid = os.getpid()
            return self._producer

    def send(
        self, topic: str, params: Params, error: BaseException | Failure, attempts: int, group_id: str
    ) -> None:
        """Produce and wait for the acknowledgement; raises if Kafka did not take it and retrying may help.

        topic is the route-side name (e.g. route.dead_letter_topic); the topic mapper gives Kafka's.
        """
        failure = Failure.of(error)
        headers = dead_letter_headers(params, failure, attempts, group_id)
        kafka_topic = self.settings.topic_mapper.outgoing(topic)
        try:
            where = self._produce(kafka_topic, params.raw_payload, params.key, headers)
        except UNFIXABLE as exc:
            where = self._send_cut_down(kafka_topic, params, headers, exc)
        log.error(
            "dead-lettered %s-%d@%d to %s after %d attempt(s): %s",
            params.topic, params.partition, params.offset, where, attempts, str(failure)[:300],
        )
        if self.monitor is not None:
            self.monitor.instrument(
                "dead_letter", route=f"{group_id}/{params.topic}", group_id=group_id, topic=params.topic,
                partition=params.partition, offset=params.offset, dead_letter_topic=topic,
                error=str(failure), attempts=attempts,
            )

    def send_unroutable(self, body: dict[str, Any], error: BaseException | Failure, task_id: str | None) -> str:
        """An untrusted task, whole, to '<client_id>.unroutable'; returns where it went. Raises like send()."""
        failure = Failure.of(error)
        topic = unroutable_topic(self.settings.client_id)
        value = json.dumps(body, default=repr).encode("utf-8")
        headers: HeaderList = [
            (ERROR_CLASS, _text(failure.error_class)),
            (ERROR_MESSAGE, _text(failure.message[:MAX_ERROR_MESSAGE])),
            (TASK_ID, _text(task_id or "")),
            (FAILED_AT, _text(datetime.now(timezone.utc).isoformat())),
        ]
        kafka_topic = self.settings.topic_mapper.outgoing(topic)
        try:
            where = self._produce(kafka_topic, value, None, headers)
        except UNFIXABLE as exc:
            cut = [*headers, (TRUNCATED, f"task body {len(value)} bytes cut to {PREVIEW_BYTES}: "
                              f"{type(exc).__name__}".encode())]
            where = self._produce(kafka_topic, _preview(value), None, cut)
        log.error("refused task %s (%s); its body is in %s", task_id, str(failure)[:300], where)
        return where

    def _send_cut_down(self, kafka_topic: str, params: Params, headers: HeaderList, cause: Exception) -> str:
        """The letter Kafka refused for good, cut to a preview that names the original's coordinates."""
        ours = [(k, v) for k, v in headers if k.startswith(HEADER_PREFIX)]
        note = (f"{type(cause).__name__}: value {_size(params.raw_payload)} bytes, key {_size(params.key)} bytes, "
                f"{len(headers) - len(ours)} original header(s); kept the first {PREVIEW_BYTES} bytes of value "
                "and key and no original header; the original is at the origin coordinates")
        cut = [*ours, (TRUNCATED, _text(note))]
        log.warning("dead letter of %s-%d@%d refused by Kafka (%s); sending a cut-down copy",
                    params.topic, params.partition, params.offset, cause)
        value, key = _preview(params.raw_payload), _preview(params.key)
        try:
            return self._produce(kafka_topic, value, key, cut)
        except UNFIXABLE as exc:
            fallback = self.settings.topic_mapper.outgoing(unroutable_topic(self.settings.client_id))
            log.error("dead-letter topic %s refuses even a cut-down letter (%s); sending it to %s",
                      kafka_topic, exc, fallback)
            return self._produce(fallback, value, key, [*cut, (INTENDED_TOPIC, _text(kafka_topic))])

    def _produce(self, kafka_topic: str, value: bytes | None, key: bytes | None, headers: HeaderList) -> str:
        future = self._get_producer().send(kafka_topic, value=value, key=key, headers=headers)
        metadata = future.get(timeout=self.settings.dead_letter_timeout)
        return f"{kafka_topic}-{metadata.partition}@{metadata.offset}"

    def close(self) -> None:
        with self._lock:
            if self._producer is not None and self._pid == os.getpid():
                self._producer.close(timeout=5)
            self._producer = None
