"""`kbridge topics create`: the routed topics and their dead-letter topics, made before anything runs.

A listener may not see a topic created after it subscribed until kafka-python's
next metadata refresh (5 minutes by default), and a dead letter to a missing topic
is never acknowledged, so the message is held and retried until the topic exists. Creating
every routed and dead-letter topic up front, from the routes themselves, keeps
deployment scripts from drifting out of step with the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from .config import Settings
from .errors import KBridgeError
from .routing import ConsumerGroup

ADMIN_KEYS = frozenset(KafkaAdminClient.DEFAULT_CONFIG)
TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code: another process created it first, which is fine


@dataclass
class TopicsResult:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def routed_topics(groups: Iterable[ConsumerGroup]) -> list[str]:
    """Every topic the groups consume, then their dead-letter topics; each once, in routing order."""
    names: dict[str, None] = {}
    dlqs: dict[str, None] = {}
    for group in groups:
        for route in group.topics.values():
            names[route.name] = None
            dlqs[route.dead_letter_topic] = None
        for route in group.patterns.values():  # the topics a pattern matches come and go; its dead letters stay
            dlqs[route.dead_letter_topic] = None
    return list(names) + [d for d in dlqs if d not in names]


def admin_config(settings: Settings) -> dict[str, Any]:
    """The app's connection settings (SASL and SSL included) that the admin client understands."""
    return {"client_id": settings.client_id, **{k: v for k, v in settings.kafka.items() if k in ADMIN_KEYS}}


def kafka_names(settings: Settings, names: Iterable[str]) -> list[str]:
    """Routes name topics logically; Kafka sees them through the app's topic mapper."""
    return [settings.topic_mapper.outgoing(n) for n in names]


def create_topics(settings: Settings, names: list[str], partitions: int, replication_factor: int,
                  bootstrap: str | None = None) -> TopicsResult:
    """Create the missing topics (logical names, mapped here); existing ones are never altered or deleted.

    bootstrap: a plaintext broker to use instead of the app's (kbridge dev's local one).
    """
    names = kafka_names(settings, names)
    config = admin_config(settings) if bootstrap is None else {"client_id": settings.client_id,
                                                                "bootstrap_servers": bootstrap}
    try:
        # A one-off command: fail within 5 s rather than kafka-python's 30 s, unless the app says otherwise.
        admin = KafkaAdminClient(**{"bootstrap_timeout_ms": 5_000, **config})
    except KafkaError as exc:
        raise KBridgeError(
            f"cannot reach Kafka at {config.get('bootstrap_servers')!r}: {exc}; is it running? "
            "For local development `kbridge dev` starts one (pip install 'kbridge[embedded]')"
        ) from exc
    result = TopicsResult()
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        result.existing = [n for n in names if n in existing]
        if not missing:
            return result
        spec = {"num_partitions": partitions, "replication_factor": replication_factor}
        response = admin.create_topics({n: dict(spec) for n in missing}, raise_errors=False)
        problems = []
        for topic in response["topics"]:
            if topic["error_code"] == 0:
                result.created.append(topic["name"])
            elif topic["error_code"] == TOPIC_ALREADY_EXISTS:
                result.existing.append(topic["name"])
            else:
                problems.append(f"{topic['name']}: error {topic['error_code']} {topic['error_message'] or ''}".strip())
        if problems:
            raise KBridgeError("Kafka refused to create topic(s): " + "; ".join(problems))
        return result
    finally:
        admin.close()
