"""kbridge asyncapi: an AsyncAPI 3.0 document of the routes, checked by a validator and field by field."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml
from click.testing import CliRunner
from pydantic_asyncapi.v3 import AsyncAPI
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from kbridge import BaseConsumer, KBridge, PrefixMapper, Responder
from kbridge.asyncapi import document
from kbridge.cli import main
from tests.apps.typed_app import Order


@dataclasses.dataclass
class Address:
    city: str
    zip: str | None = None


@dataclasses.dataclass
class Shipment:
    """A parcel on its way."""

    id: int
    to: Address
    parcels: list[float]


class Event(msgspec.Struct):
    kind: str
    at: int


class Noop(BaseConsumer):
    def perform(self) -> None: ...


class Confirmations(Responder):
    topics = ["confirmations"]

    def respond(self, order: Any) -> None:
        self.respond_to("confirmations", order)


def make_app() -> KBridge:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "k1:9092,k2:9092"},
                  topic_mapper=PrefixMapper("acme."))
    with app.consumer_group("sales") as group:
        group.topic("orders", consumer=Noop, backend="inline", payload_model=Order, responder=Confirmations)
        group.topic("events", consumer=Noop, backend="inline", payload_model=Event, dead_letter_topic="bad.events")
    app.topic("shipments", consumer=Noop, backend="inline", payload_model=Shipment)
    app.topic("raw", consumer=Noop, backend="inline", deserializer=bytes)
    with app.consumer_group("audit") as group:
        group.topic("orders", consumer=Noop, backend="inline", payload_model=Order)  # one topic, two groups
    return app


app = make_app()  # for the command's --app


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_the_document_validates_and_every_reference_resolves() -> None:
    doc = document(make_app())
    AsyncAPI.model_validate(doc)  # the AsyncAPI 3 object model (pydantic-asyncapi)
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "shop"
    assert doc["servers"] == {"kafka": {"host": "k1:9092", "protocol": "kafka"},
                              "kafka1": {"host": "k2:9092", "protocol": "kafka"}}
    for ref in refs(doc):
        resolve(doc, ref)
    identifier = re.compile(r"^[\w\d.\-_]+$")  # the spec's pattern for channel, operation and message ids
    assert all(identifier.match(k) for k in [*doc["channels"], *doc["operations"], *doc["components"]["schemas"]])
    for channel in doc["channels"].values():
        assert all(identifier.match(k) for k in channel["messages"])


def test_channels_are_kafka_topics_with_their_messages() -> None:
    doc = document(make_app())
    channels = doc["channels"]
    assert {k: c["address"] for k, c in channels.items()} == {
        "acme.orders": "acme.orders", "acme.orders.dlq": "acme.orders.dlq",
        "acme.confirmations": "acme.confirmations",
        "acme.events": "acme.events", "acme.bad.events": "acme.bad.events",
        "acme.shipments": "acme.shipments", "acme.shipments.dlq": "acme.shipments.dlq",
        "acme.raw": "acme.raw", "acme.raw.dlq": "acme.raw.dlq",
    }
    assert channels["acme.orders"]["bindings"] == {"kafka": {"topic": "acme.orders", "bindingVersion": "0.5.0"}}
    assert channels["acme.orders"]["messages"]["Order"]["payload"] == {"$ref": "#/components/schemas/Order"}
    assert channels["acme.raw"]["messages"]["raw.payload"]["contentType"] == "application/octet-stream"
    letter = channels["acme.orders.dlq"]["messages"]["dead_letter"]
    assert {"kbridge-origin-topic", "kbridge-error-class", "kbridge-validation-errors"} <= set(
        letter["headers"]["properties"])


def test_operations_receive_routed_topics_and_send_dead_letters_and_responses() -> None:
    ops = document(make_app())["operations"]
    assert {k: (o["action"], o["channel"]["$ref"]) for k, o in ops.items()} == {
        "sales.orders.receive": ("receive", "#/channels/acme.orders"),
        "sales.orders.dead_letter": ("send", "#/channels/acme.orders.dlq"),
        "sales.orders.respond.confirmations": ("send", "#/channels/acme.confirmations"),
        "sales.events.receive": ("receive", "#/channels/acme.events"),
        "sales.events.dead_letter": ("send", "#/channels/acme.bad.events"),
        "shipments.shipments.receive": ("receive", "#/channels/acme.shipments"),
        "shipments.shipments.dead_letter": ("send", "#/channels/acme.shipments.dlq"),
        "raw.raw.receive": ("receive", "#/channels/acme.raw"),
        "raw.raw.dead_letter": ("send", "#/channels/acme.raw.dlq"),
        "audit.orders.receive": ("receive", "#/channels/acme.orders"),
        "audit.orders.dead_letter": ("send", "#/channels/acme.orders.dlq"),
    }
    assert ops["audit.orders.receive"]["bindings"]["kafka"]["groupId"] == {"type": "string", "enum": ["shop_audit"]}
    assert ops["sales.orders.receive"]["messages"] == [{"$ref": "#/channels/acme.orders/messages/Order"}]


@pytest.mark.parametrize(("model", "good", "bad"), [
    ("Order", {"id": 1, "lines": [{"sku": "a", "quantity": 1}]}, {"id": 1, "lines": [{"sku": "a", "quantity": 0}]}),
    ("Event", {"kind": "k", "at": 1}, {"kind": "k"}),
    ("Shipment", {"id": 1, "to": {"city": "Oslo"}, "parcels": [1.5]}, {"id": 1, "to": {"zip": "1"}, "parcels": []}),
])
def test_payload_schemas_come_from_the_models_and_accept_what_the_model_accepts(
    model: str, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    doc = document(make_app())
    schemas = doc["components"]["schemas"]
    assert {"Order", "Line", "Event", "Shipment", "Address"} <= set(schemas)
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    registry = Registry().with_resource("urn:doc", Resource(contents=doc, specification=DRAFT202012))
    validator = jsonschema.Draft202012Validator({"$ref": f"urn:doc#/components/schemas/{model}"}, registry=registry)
    validator.validate(good)
    assert not validator.is_valid(bad)
    assert schemas["Shipment"]["description"] == "A parcel on its way."
    assert schemas["Shipment"]["properties"]["to"] == {"$ref": "#/components/schemas/Address"}


def test_a_pattern_route_is_a_channel_without_a_fixed_address() -> None:
    source = make_app()
    with source.consumer_group("regions") as group:
        group.pattern("regional", r"region\..+", consumer=Noop, backend="inline", payload_model=Order)
    rendered = document(source)
    channel = rendered["channels"]["pattern.regions.regional"]
    assert channel["address"] is None and channel["x-kbridge-pattern"] == r"region\..+"
    operation = rendered["operations"]["regions.regional.receive"]
    assert operation["channel"] == {"$ref": "#/channels/pattern.regions.regional"}
    AsyncAPI.model_validate(rendered)


def test_the_command_prints_json_or_writes_yaml(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(main, ["asyncapi", "--app", "tests.unit.test_asyncapi:app"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == document(app)
    out = tmp_path / "api.yaml"
    written = runner.invoke(main, ["asyncapi", "--app", "tests.unit.test_asyncapi:app", "--output", str(out)])
    assert written.exit_code == 0, written.output
    assert "9 channel(s), 11 operation(s)" in written.output
    assert yaml.safe_load(out.read_text()) == document(app)
