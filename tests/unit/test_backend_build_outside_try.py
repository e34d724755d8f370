"""A backend that cannot be built (it connects eagerly and its broker is down) holds the partition with
backoff, like a failed enqueue; it never stops the poll loop."""
from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from kbridge import BaseConsumer, KBridge
from kbridge.backends import registry
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.steps import Fetched
from kbridge.params import Params
from kbridge.runtime import Runtime

from .test_processor import TP, FakeKafkaConsumer


class EagerPlugin:
    name = "eager"
    performs_in_listener = False
    def route_problems(self, options: Mapping[str, Any], has_celery: bool) -> list[str]: return []
    def bind(self, app): pass
    def build(self, runtime):
        raise ConnectionError("broker unreachable")


class C(BaseConsumer):
    def perform(self): pass


def test_backend_that_cannot_be_built_holds_instead_of_killing_the_loop() -> None:
    registry.register(EagerPlugin())
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("users", consumer=C, backend="eager")
    proc = GroupProcessor(Runtime.of(app, object()), app.routes.groups["users"], threading.Event())
    proc.consumer = FakeKafkaConsumer()
    proc._take(Fetched(TP, messages=[Params(topic="users", partition=0, offset=0, raw_payload=b"{}")]))
    assert TP in proc._held
