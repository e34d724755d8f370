"""Pause and resume, sent from the dashboard to every listener over the commands topic."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from kafka import KafkaProducer

from ..app import KBridge
from ..errors import KBridgeError
from ..listener.controls import command_problem
from ..reports import commands_topic
from ..routing.mapper import kafka_names
from ..routing.patterns import subscription


def routed_partitions(app: KBridge) -> dict[str, set[str]]:
    """group_id -> the Kafka names of its topics: what a command may name."""
    return {g.id: set(kafka_names(app.settings.topic_mapper, g.topics)) for g in app.routes.groups.values()}


def _matches_a_pattern(app: KBridge, group_id: str, topic: Any) -> bool:
    """A topic of one of the group's pattern routes (a Kafka name, the mapper's prefix included)."""
    group = next((g for g in app.routes.groups.values() if g.id == group_id), None)
    if group is None or not group.patterns or not isinstance(topic, str):
        return False
    regex = subscription(app.settings.topic_mapper, [], group.patterns.values())[1]
    return regex is not None and re.fullmatch(regex, topic) is not None


def build(app: KBridge, action: str, body: Any) -> dict[str, Any]:
    """A command from a request body; a KBridgeError saying what is wrong with it."""
    if not isinstance(body, dict):
        raise KBridgeError("the body must be a JSON object with group_id, topic and partition (null: every one)")
    command = {"id": uuid.uuid4().hex, "action": action, "group_id": body.get("group_id"),
               "topic": body.get("topic"), "partition": body.get("partition"), "at": time.time()}
    problem = command_problem(command)
    if problem is not None:
        raise KBridgeError(problem)
    topics = routed_partitions(app).get(str(command["group_id"]))
    if topics is None:
        raise KBridgeError(f"group_id {command['group_id']!r} is not a consumer group of this app")
    if command["topic"] not in topics and not _matches_a_pattern(app, str(command["group_id"]), command["topic"]):
        raise KBridgeError(f"topic {command['topic']!r} is not routed in {command['group_id']}")
    return command


class CommandSender:
    def __init__(self, app: KBridge) -> None:
        self.app = app
        self._producer: KafkaProducer | None = None

    def send(self, command: dict[str, Any]) -> None:
        settings = self.app.settings
        if self._producer is None:
            self._producer = KafkaProducer(**{"acks": "all", **settings.producer_config()})
        self._producer.send(commands_topic(settings), key=command["group_id"].encode(),
                            value=json.dumps(command).encode()).get(timeout=settings.produce_timeout)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
