"""App-wide settings, validated in one pass so a bad config shows every problem at once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from .errors import ConfigError
from .routing.names import name_problem

SECRET_MARKERS = ("password", "secret", "token", "credential", "private_key", "sasl_oauth")

# kafka-python options kbridge owns: the delivery rules depend on them.
RESERVED_KAFKA_KEYS = {
    "group_id": "it is always '<client_id>_<consumer group name>'",
    "enable_auto_commit": "kbridge commits only offsets that are safe",
    "auto_offset_reset": "use the topic option start_from_beginning",
    "value_deserializer": "use the topic option deserializer; payloads are parsed lazily",
    "key_deserializer": "keys reach consumers as raw bytes",
    "value_serializer": "dead letters keep the original bytes",
    "key_serializer": "dead letters keep the original bytes",
}
CONSUMER_KEYS = frozenset(KafkaConsumer.DEFAULT_CONFIG)
PRODUCER_KEYS = frozenset(KafkaProducer.DEFAULT_CONFIG)


@dataclass(frozen=True)
class Settings:
    client_id: str
    kafka: dict[str, Any] = field(default_factory=dict)
    shutdown_timeout: float = 30.0
    max_poll_records: int = 500
    poll_timeout: float = 0.5
    enqueue_backoff_max: float = 30.0
    dead_letter_timeout: float = 30.0
    redelivery_after: float = 60.0  # Redis fast path: re-queue a task gone from Redis this long without running

    @classmethod
    def build(cls, values: dict[str, Any]) -> Settings:
        """Check every key; raise one ConfigError listing all problems."""
        problems: list[str] = []
        known = {f.name for f in fields(cls)}
        for key in sorted(set(values) - known):
            problems.append(f"unknown setting {key!r}; known settings: {', '.join(sorted(known))}")

        client_id = values.get("client_id")
        if client_id is None:
            problems.append("client_id is required, e.g. KBridge(client_id='shop', ...)")
        elif (p := name_problem("client_id", client_id)) is not None:
            problems.append(p)

        kafka = values.get("kafka")
        if not isinstance(kafka, dict):
            problems.append(f"kafka must be a dict of kafka-python settings, got {type(kafka).__name__}")
        else:
            problems.extend(_kafka_problems(kafka))

        for key in ("shutdown_timeout", "poll_timeout", "enqueue_backoff_max", "dead_letter_timeout",
                    "redelivery_after"):
            if key in values and not _positive(values[key]):
                problems.append(f"{key} must be a number of seconds > 0, got {values[key]!r}")
        mpr = values.get("max_poll_records", cls.max_poll_records)
        if not (isinstance(mpr, int) and not isinstance(mpr, bool) and mpr > 0):
            problems.append(f"max_poll_records must be an integer > 0, got {mpr!r}")
        if problems:
            raise ConfigError(problems)
        return cls(**{k: v for k, v in values.items() if k in known})

    def consumer_config(self) -> dict[str, Any]:
        return {"client_id": self.client_id, **{k: v for k, v in self.kafka.items() if k in CONSUMER_KEYS}}

    def producer_config(self) -> dict[str, Any]:
        return {"client_id": self.client_id, **{k: v for k, v in self.kafka.items() if k in PRODUCER_KEYS}}

    def masked_kafka(self) -> dict[str, Any]:
        """kafka settings safe to print or log."""
        return {k: ("*****" if is_secret(k) else v) for k, v in self.kafka.items()}


def _kafka_problems(kafka: dict[str, Any]) -> list[str]:
    problems = []
    if not kafka.get("bootstrap_servers"):
        problems.append("kafka['bootstrap_servers'] is required, e.g. '127.0.0.1:9092'")
    for key in kafka:
        if key in RESERVED_KAFKA_KEYS:
            problems.append(f"kafka[{key!r}] cannot be set: {RESERVED_KAFKA_KEYS[key]}")
        elif key not in CONSUMER_KEYS and key not in PRODUCER_KEYS:
            problems.append(f"kafka[{key!r}] is not a kafka-python consumer or producer setting; check its spelling")
    return problems


def is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
