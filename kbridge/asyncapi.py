"""An AsyncAPI 3.0 document of an app's routes, for `kbridge asyncapi`.

What the app does, seen from Kafka:
- it receives from every routed topic (one operation per route, with its consumer group);
- it sends dead letters to each route's dead-letter topic;
- it sends to the topics its routes' responders declare.

Each distinct Kafka topic is one channel. A pattern route's channel has no fixed address:
its regex is in the channel's description and in `x-kbridge-pattern`. Payload schemas
come from the routes' payload_model (pydantic, msgspec or dataclass) and live under
components/schemas, so models shared by several routes appear once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import __version__
from .dlq import (
    ATTEMPTS,
    ERROR_CLASS,
    ERROR_MESSAGE,
    FAILED_AT,
    ORIGIN_GROUP,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    VALIDATION_ERRORS,
)
from .params import json_deserializer
from .payloads import TypedDeserializer, json_schema, model_name
from .render import responder_topics

if TYPE_CHECKING:
    from .app import KBridge
    from .routing import Route

VERSION = "3.0.0"
KAFKA_BINDING = "0.5.0"
SCHEMA_REF = "#/components/schemas/{model}"
_ID_UNSAFE = re.compile(r"[^\w.\-]")


@dataclass
class _Channel:
    key: str
    address: str | None
    description: str
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"address": self.address, "description": self.description,
                               "messages": self.messages, **self.extra}
        if self.address is not None:
            out["bindings"] = {"kafka": {"topic": self.address, "bindingVersion": KAFKA_BINDING}}
        return out


class _Document:
    def __init__(self, app: KBridge) -> None:
        self.app = app
        self.channels: dict[str, _Channel] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}

    def channel(self, address: str | None, key: str, description: str, **extra: Any) -> _Channel:
        key = _ID_UNSAFE.sub("_", key)
        if key not in self.channels:
            self.channels[key] = _Channel(key, address, description, extra=extra)
        return self.channels[key]

    def message(self, channel: _Channel, name: str, body: dict[str, Any]) -> dict[str, str]:
        name = _ID_UNSAFE.sub("_", name)
        channel.messages.setdefault(name, {"name": name, **body})
        return {"$ref": f"#/channels/{channel.key}/messages/{name}"}

    def operation(self, op_id: str, body: dict[str, Any]) -> None:
        self.operations[_ID_UNSAFE.sub("_", op_id)] = body

    def payload(self, route: Route) -> dict[str, Any]:
        """The route's message: its model's schema by reference, or any JSON / bytes without one."""
        model = route.payload_model
        inner = route.deserializer.inner if isinstance(route.deserializer, TypedDeserializer) else route.deserializer
        content = "application/json" if inner is json_deserializer else "application/octet-stream"
        if model is None:
            return {"title": "untyped payload", "contentType": content,
                    "payload": {"description": f"read by {getattr(inner, '__name__', repr(inner))}"}}
        schema, defs = json_schema(model, SCHEMA_REF)
        for name, sub in {**defs, model_name(model): schema}.items():
            self.schemas.setdefault(name, sub)
        return {"title": model_name(model), "contentType": content,
                "payload": {"$ref": SCHEMA_REF.format(model=model_name(model))}}

    def add_route(self, route: Route) -> None:
        mapper = self.app.settings.topic_mapper
        if route.pattern is not None:  # group.pattern(name, regex, ...): no fixed address
            regex = route.pattern.pattern
            source = self.channel(None, f"pattern.{route.group_name}.{route.name}",
                                  f"every topic matching the regex {regex!r}", **{"x-kbridge-pattern": str(regex)})
        else:
            topic = mapper.outgoing(route.name)
            source = self.channel(topic, topic, f"routed to {route.consumer.__qualname__}")
        message = self.message(source, self._message_name(route), self.payload(route))
        self.operation(f"{route.group_name}.{route.name}.receive", {
            "action": "receive", "channel": {"$ref": f"#/channels/{source.key}"}, "messages": [message],
            "summary": f"{route.consumer.__qualname__} in consumer group {route.group_id}",
            "bindings": {"kafka": {"groupId": {"type": "string", "enum": [route.group_id]},
                                   "bindingVersion": KAFKA_BINDING}},
        })
        self._dead_letters(route)
        for topic in responder_topics(route):
            kafka_topic = mapper.outgoing(topic)
            target = self.channel(kafka_topic, kafka_topic, f"responses of {route.consumer.__qualname__}")
            reply = self.message(target, "response", {"title": "response", "payload": {}})
            self.operation(f"{route.group_name}.{route.name}.respond.{topic}", {
                "action": "send", "channel": {"$ref": f"#/channels/{target.key}"}, "messages": [reply],
                "summary": f"{route.consumer.__qualname__} responds to {topic}",
            })

    def _dead_letters(self, route: Route) -> None:
        dlq = self.app.settings.topic_mapper.outgoing(route.dead_letter_topic)
        channel = self.channel(dlq, dlq, f"dead letters of {route.group_id}/{route.name}")
        headers = {name: {"type": "string"} for name in (
            ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET, ORIGIN_GROUP, ERROR_CLASS, ERROR_MESSAGE, ATTEMPTS,
            FAILED_AT)}
        headers[VALIDATION_ERRORS] = {"type": "string", "contentMediaType": "application/json",
                                      "description": "payload_model: [{\"path\": ..., \"message\": ...}]"}
        letter = self.message(channel, "dead_letter", {
            "title": "dead letter",
            "summary": "the original value, key and headers, plus where it came from and why it failed",
            "headers": {"type": "object", "properties": headers,
                        "required": [ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET, ERROR_CLASS]},
            "payload": {"description": "the original message's bytes, unchanged"},
        })
        self.operation(f"{route.group_name}.{route.name}.dead_letter", {
            "action": "send", "channel": {"$ref": f"#/channels/{channel.key}"}, "messages": [letter],
            "summary": "messages that failed for good (poison, filter errors, invalid payloads, retries used up)",
        })

    @staticmethod
    def _message_name(route: Route) -> str:
        return model_name(route.payload_model) if route.payload_model is not None else f"{route.name}.payload"

    def render(self) -> dict[str, Any]:
        settings = self.app.settings
        servers = settings.kafka.get("bootstrap_servers") or []
        if isinstance(servers, str):
            servers = servers.split(",")
        doc: dict[str, Any] = {
            "asyncapi": VERSION,
            "info": {"title": settings.client_id, "version": __version__,
                     "description": f"Kafka routes of kbridge app {settings.client_id!r}"},
            "defaultContentType": "application/json",
            "servers": {f"kafka{i}" if i else "kafka": {"host": s.strip(), "protocol": "kafka"}
                        for i, s in enumerate(servers)},
            "channels": {k: c.render() for k, c in self.channels.items()},
            "operations": self.operations,
        }
        if self.schemas:
            doc["components"] = {"schemas": self.schemas}
        return doc


def document(app: KBridge) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every route of app, as JSON-ready data."""
    doc = _Document(app)
    for route in app.routes:
        doc.add_route(route)
    return doc.render()
