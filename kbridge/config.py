"""App-wide settings, validated in one pass so a bad config shows every problem at once."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
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
# Group membership defaults of kbridge's consumers (listener, dlq replay); the app's kafka settings override them.
# kafka-python's 45 s session makes some brokers (Tansu) hold a first group join for ~23 s; 6 s (Kafka's
# minimum) joins in ~3 s there, and a dead listener's partitions move on sooner everywhere.
GROUP_DEFAULTS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
# Where the metrics and health servers listen unless told otherwise: this host only.
DEFAULT_HOST = "127.0.0.1"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
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
    # The address they listen on: this host only by default; "0.0.0.0" (every interface) in a container
    # whose port a scraper or a probe reaches from outside. --metrics-host / --health-host override these.
    metrics_host: str = DEFAULT_HOST
    health_host: str = DEFAULT_HOST
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
        problems.extend(_host_problems(values))
        if "topic_mapper" in values:
            problems.extend(mapper_problems(values["topic_mapper"]))
        mpr = values.get("max_poll_records", cls.max_poll_records)
        if not (isinstance(mpr, int) and not isinstance(mpr, bool) and mpr > 0):
            problems.append(f"max_poll_records must be an integer > 0, got {mpr!r}")
        if problems:
            raise ConfigError(problems)
        return cls(**{k: v for k, v in values.items() if k in known})

    def consumer_config(self) -> dict[str, Any]:
        # The two go together (a heartbeat must come well within the session): an app that sets either owns both.
        defaults = {} if GROUP_DEFAULTS.keys() & self.kafka.keys() else GROUP_DEFAULTS
        return {"client_id": self.client_id, **defaults,
                **{k: v for k, v in self.kafka.items() if k in CONSUMER_KEYS}}

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
        elif (p := kafka_type_problem(key, kafka[key])) is not None:
            problems.append(p)
    return problems


# What a kafka-python setting takes, judged by its default: (check, what to write in the message).
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number (int or float)"),
    "str": (lambda v: isinstance(v, str), "a str"),
    "sequence": (lambda v: isinstance(v, (list, tuple)), "a list or tuple"),
    "callable": (callable, "a callable (a function or a class)"),
}
# Settings whose default does not tell their type (or tells only part of it).
_KAFKA_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "acks": (lambda v: not isinstance(v, bool) and v in (0, 1, -1, "all"), "0, 1, -1 or 'all'"),
    "bootstrap_servers": (
        lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v)),
        "a str 'host:port[,host:port]' or a list of 'host:port' strs",
    ),
    "client_id": (lambda v: isinstance(v, str), "a str"),
}


def _kind(default: object) -> str | None:
    """The kind of a kafka-python default; None when it says nothing (None, or an arbitrary object)."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "number"
    if isinstance(default, str):
        return "str"
    if isinstance(default, (list, tuple)):
        return "sequence"
    if callable(default):
        return "callable"
    return None


def kafka_type_problem(key: str, value: object) -> str | None:
    """Why value cannot be kafka-python's setting key, judged by the type of its default; None if it can.

    A setting whose default is None (or an object of no plain type) takes anything here:
    kafka-python itself says what it makes of it.
    """
    if key in _KAFKA_TYPES:
        check, expected = _KAFKA_TYPES[key]
        default: object = KafkaProducer.DEFAULT_CONFIG.get(key, KafkaConsumer.DEFAULT_CONFIG.get(key))
    else:
        defaults = [c[key] for c in (KafkaConsumer.DEFAULT_CONFIG, KafkaProducer.DEFAULT_CONFIG) if key in c]
        kinds = {_kind(d) for d in defaults}
        if not defaults or None in kinds:
            return None
        if len(kinds) > 1:
            return None  # the consumer and the producer disagree; let kafka-python judge
        kind = kinds.pop()
        assert kind is not None
        check, expected = _KINDS[kind]
        default = defaults[0]
    if check(value):
        return None
    shown = "*****" if is_secret(key) else _short(value)
    hint = "" if callable(default) or default is None else f" (kafka-python's default is {default!r})"
    return f"kafka[{key!r}] must be {expected}{hint}, got {type(value).__name__} {shown}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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


def _host_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("metrics_host", "health_host"):
        if key in values and not is_host(values[key]):
            problems.append(
                f"{key} must be an IP address or a host name to listen on, e.g. '127.0.0.1' (this host only) "
                f"or '0.0.0.0' (every interface), got {values[key]!r}"
            )
    return problems


def is_host(value: object) -> bool:
    """An address a server can bind: an IPv4 or IPv6 literal, or a host name."""
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(HOSTNAME_RE.match(value))
    return True


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
