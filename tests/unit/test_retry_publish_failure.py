"""A retry the broker cannot take (it blipped while the task scheduled its next attempt) requeues the
message being worked on: Celery's own Reject(requeue=False) would drop it."""
from __future__ import annotations

import pytest
from celery import Celery
from celery.canvas import Signature
from celery.exceptions import Reject

from kbridge import BaseConsumer, KBridge
from kbridge.backends.celery.task import TASK_NAME, use_runtime
from kbridge.interchange import to_wire
from kbridge.params import Params
from kbridge.runtime import Runtime


class Failing(BaseConsumer):
    def perform(self) -> None:
        raise RuntimeError("boom")


class Sink:
    sent: list = []
    def send(self, *a): self.sent.append(a)
    def send_unroutable(self, *a): raise AssertionError


def test_retry_publish_failure_rejects_the_message_without_requeue(monkeypatch) -> None:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, celery=Celery("shop", broker="memory://"))
    app.topic("users", consumer=Failing, max_retries=3)
    sink = Sink()
    use_runtime(app, Runtime.of(app, sink))
    task = app.celery.tasks[TASK_NAME]

    def broker_down(self, *a, **kw):
        raise ConnectionError("broker connection reset")
    monkeypatch.setattr(Signature, "apply_async", broker_down)

    msg = to_wire(Params(topic="users", partition=0, offset=4, raw_payload=b"{}"))
    task.push_request(id="abc", args=["shop_users/users", [msg]], kwargs={}, retries=0, called_directly=False)
    try:
        with pytest.raises(Reject) as info:
            task.run("shop_users/users", [msg])
    finally:
        task.pop_request()
    print("raised:", repr(info.value), "requeue =", info.value.requeue)
    assert sink.sent == []
    # kbridge's promise: the message is retried, dead-lettered, or at least requeued -- never dropped.
    assert info.value.requeue, "Reject(requeue=False): the acks_late message is dropped by the worker"
