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


def build(app: KBridge, action: str, body: Any) -> dict[str, Any]:
    """A command from a request body; a KBridgeError saying what is wrong with it."""
    if not isinstance(body, dict):
        raise KBridgeError("the body must be a JSON object with group_id, topic and partition (null: every one)")
    command = {"id": uuid.uuid4().hex, "action": action, "group_id": body.get("group_id"),
               "topic": body.get("topic"), "partition": body.get("partition"), "at": time.time()}
    problem = command_problem(command)
    if problem is not None:
        raise KBridgeError(problem)
    group = next((g for g in app.routes.groups.values() if g.id == command["group_id"]), None)
    if group is None:
        raise KBridgeError(f"group_id {command['group_id']!r} is not a consumer group of this app")
    # command_problem made topic a non-empty string; the listener's own lookup says whether the group routes it
    if route_of_kafka_topic([group], app.settings.topic_mapper, str(command["topic"])) is None:
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
