"""The app tests/integration/test_replay.py replays dead letters for: it routes one topic, <run>.orders.

Its consumer runs inline and fails for good on the payload b"poison", so a listener of this
app dead-letters that message again each time replay sends it back.

Configured from the environment like tests/apps/pipeline.py, so `kbridge dlq replay --app
tests.apps.replay_app:app` in a subprocess sees the same broker and names as the test.
make_app() builds the same app in-process, with a topic mapper if asked.
"""

from __future__ import annotations

import os

from kbridge import BaseConsumer, KBridge
from kbridge.routing.mapper import IdentityMapper, PrefixMapper, TopicMapper
from kbridge.testing.kafka import FAST_GROUP

RUN = os.environ.get("REPLAY_RUN", "local")
KAFKA = os.environ.get("REPLAY_KAFKA", "127.0.0.1:9092")


class Orders(BaseConsumer):
    def perform(self) -> None:
        if self.params.raw_payload == b"poison":
            raise ValueError("poison: this payload never works")


def make_app(run: str, kafka: str, prefix: str | None = None) -> KBridge:
    mapper: TopicMapper = PrefixMapper(prefix) if prefix else IdentityMapper()
    app = KBridge(client_id=f"replay-{run}", kafka={"bootstrap_servers": kafka, **FAST_GROUP}, topic_mapper=mapper)
    with app.consumer_group("orders") as group:
        group.topic(f"{run}.orders", consumer=Orders, backend="inline", max_retries=0)
    return app


app = make_app(RUN, KAFKA)
