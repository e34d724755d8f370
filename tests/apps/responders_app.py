"""The app tests/integration/test_responders.py runs: responders and the topic mapper, in a real prefork worker.

Every name here is logical. The app runs under PrefixMapper("acme-<run>."), as a hosting
provider's account prefix would require, so Kafka only ever has the prefixed names.
Consumers tell the tests where they ran: each confirmation carries the pid of the process
that sent it, the route's name and the Kafka topic the message came from.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from kbridge import BaseConsumer, KBridge, PrefixMapper, Responder, ResponderTopic
from kbridge.testing.kafka import FAST_GROUP

RUN = os.environ.get("RESPONDERS_RUN", "local")
KAFKA = os.environ.get("RESPONDERS_KAFKA", "127.0.0.1:9092")
BROKER_URL = os.environ.get("RESPONDERS_BROKER", "redis://127.0.0.1:6379/0")
QUEUE = f"kbridge-responders-{RUN}"
PREFIX = f"acme-{RUN}."

celery_app = Celery("responders", broker=BROKER_URL)
celery_app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

app = KBridge(
    client_id=f"resp-{RUN}",
    kafka={"bootstrap_servers": KAFKA, **FAST_GROUP},
    celery=celery_app,
    topic_mapper=PrefixMapper(PREFIX),
)


def seen_as(consumer: BaseConsumer) -> dict[str, Any]:
    return {"pid": os.getpid(), "route": consumer.topic.name, "kafka_topic": consumer.params.topic}


class ConfirmationResponder(Responder):
    topics = ["confirmations", ResponderTopic("audit", required=False, delivery="async")]

    def respond(self, order: dict[str, Any], where: dict[str, Any]) -> None:
        self.respond_to("confirmations", {"order": order["id"], **where}, key=str(order["id"]))
        if order.get("audit"):
            self.respond_to("audit", f"order {order['id']} audited".encode(), headers={"pid": str(os.getpid())})


class ForgetfulResponder(Responder):
    """Declares receipts as required but never sends one: the call must send nothing at all."""

    topics = ["confirmations", "receipts"]

    def respond(self, order: dict[str, Any], where: dict[str, Any]) -> None:
        self.respond_to("confirmations", {"order": order["id"], **where})


class StrayResponder(Responder):
    """Sends to a topic it never declared: the call must send nothing at all."""

    topics = ["confirmations"]

    def respond(self, order: dict[str, Any], where: dict[str, Any]) -> None:
        self.respond_to("confirmations", {"order": order["id"], **where})
        self.respond_to("elsewhere", {"order": order["id"]})


class OrdersConsumer(BaseConsumer):
    def perform(self) -> None:
        self.respond_with(self.params.payload, seen_as(self))


class FailingConsumer(BaseConsumer):
    def perform(self) -> None:
        raise RuntimeError(f"failing on purpose at offset {self.params.offset}")


app.topic("orders", consumer=OrdersConsumer, responder=ConfirmationResponder)
app.topic("forgetful", consumer=OrdersConsumer, responder=ForgetfulResponder, max_retries=0)
app.topic("stray", consumer=OrdersConsumer, responder=StrayResponder, max_retries=0)
app.topic("failing", consumer=FailingConsumer, max_retries=0)
