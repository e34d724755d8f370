"""Pause and resume, sent from the dashboard to every listener over the commands topic."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from kafka import KafkaProducer

from ..app import KBridge
from ..errors import KBridgeError
from ..listener.controls import command_problem
from ..reports import commands_topic
from ..routing.lookup import route_of_kafka_topic


def _routes(app: KBridge, group_id: str, topic: Any) -> bool:
    """Whether the group routes topic (a Kafka name), as its listener resolves it."""
    group = next((g for g in app.routes.groups.values() if g.id == group_id), None)
    if group is None or not isinstance(topic, str):
        return False
    return route_of_kafka_topic([group], app.settings.topic_mapper, topic) is not None


def build(app: KBridge, action: str, body: Any) -> dict[str, Any]:
    """A command from a request body; a KBridgeError saying what is wrong with it."""
    if not isinstance(body, dict):
        raise KBridgeError("the body must be a JSON object with group_id, topic and partition (null: every one)")
    command = {"id": uuid.uuid4().hex, "action": action, "group_id": body.get("group_id"),
               "topic": body.get("topic"), "partition": body.get("partition"), "at": time.time()}
    problem = command_problem(command)
    if problem is not None:
        raise KBridgeError(problem)
    if not any(g.id == command["group_id"] for g in app.routes.groups.values()):
        raise KBridgeError(f"group_id {command['group_id']!r} is not a consumer group of this app")
    if not _routes(app, str(command["group_id"]), command["topic"]):
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
