"""App-wide settings, validated in one pass so a bad config shows every problem at once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from .errors import ConfigError
from .routing.mapper import IdentityMapper, TopicMapper, mapper_problems
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
MIN_SWARM_SILENCE = 5.0  # seconds; swarm nodes report every second


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
    # Swarm (kbridge.swarm): a supervisor forks this many listener nodes; 0 runs one plain listener process.
    swarm_nodes: int = 0
    swarm_node_max_rss_mb: int | None = None  # a node above this resident memory is replaced; None: no cap
    swarm_silence_timeout: float = 60.0  # a node that has not reported for this long is replaced
    swarm_stall_timeout: float = 300.0  # a node whose poll loop has not turned for this long is replaced
    # Producing (kbridge.producer): how long produce() and a responder wait for Kafka's acknowledgement.
    produce_timeout: float = 30.0
    # Logical route names <-> Kafka names, e.g. PrefixMapper('acme.') (kbridge.routing.mapper).
    topic_mapper: TopicMapper = field(default_factory=IdentityMapper)
    # Instrumentation (kbridge.instrumentation): HTTP ports, None = not served. `kbridge listen` serves metrics
    # and health checks, a celery worker metrics; --metrics-port / --health-port override these.
    metrics_port: int | None = None
    health_port: int | None = None  # listener only: /live and /ready for Kubernetes probes
    liveness_timeout: float = 60.0  # /live fails once a consumer group's loop has not turned for this long

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
                    "redelivery_after", "swarm_stall_timeout", "produce_timeout", "liveness_timeout"):
            if key in values and not _positive(values[key]):
                problems.append(f"{key} must be a number of seconds > 0, got {values[key]!r}")
        problems.extend(_swarm_problems(values))
        problems.extend(_port_problems(values))
        if "topic_mapper" in values:
            problems.extend(mapper_problems(values["topic_mapper"]))
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


def _swarm_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    nodes = values.get("swarm_nodes", 0)
    if not (_integer(nodes) and nodes >= 0):
        problems.append(f"swarm_nodes must be an integer >= 0 (0: no swarm), got {nodes!r}")
    cap = values.get("swarm_node_max_rss_mb")
    if cap is not None and not (_integer(cap) and cap > 0):
        problems.append(f"swarm_node_max_rss_mb must be an integer number of MB > 0, or None, got {cap!r}")
    silence = values.get("swarm_silence_timeout", MIN_SWARM_SILENCE)
    # Nodes report every second; a shorter limit would replace healthy nodes that were merely busy.
    if not (_positive(silence) and silence >= MIN_SWARM_SILENCE):
        problems.append(f"swarm_silence_timeout must be a number of seconds >= {MIN_SWARM_SILENCE:g}, got {silence!r}")
    return problems


def _port_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("metrics_port", "health_port"):
        port = values.get(key)
        if port is not None and not (_integer(port) and 1 <= port <= 65535):
            problems.append(f"{key} must be a TCP port number (1-65535) or None, got {port!r}")
    if values.get("metrics_port") is not None and values.get("metrics_port") == values.get("health_port"):
        problems.append(f"metrics_port and health_port must differ, both are {values['metrics_port']!r}")
    return problems


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
