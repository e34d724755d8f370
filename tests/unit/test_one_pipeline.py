"""TestClient, the Celery task and the listener run the same code: the same steps and the same perform runner.

Each path is run with a spy on the functions that make up the pipeline; the test
asserts which of them each path called. This is what "a unit test of a consumer sees
what the listener and the worker do" rests on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.backends.celery.task import use_runtime
from kbridge.interchange import to_wire
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.steps import Fetched
from kbridge.listener.steps.filter import FilterStep
from kbridge.listener.steps.hand_over import HandOverStep
from kbridge.listener.steps.mark import MarkStep
from kbridge.params import Params
from kbridge.perform import DeadLetterStage, PerformRunner, ReentrancyStage, RetryStage
from kbridge.runtime import Runtime
from kbridge.testing import TestClient

from .test_processor import TP, FakeKafkaConsumer

SPIED = {
    "FilterStep.submit": (FilterStep, "submit"),
    "HandOverStep.submit": (HandOverStep, "submit"),
    "MarkStep.submit": (MarkStep, "submit"),
    "PerformRunner.run": (PerformRunner, "run"),
    "ReentrancyStage.around": (ReentrancyStage, "around"),
    "RetryStage.on_failure": (RetryStage, "on_failure"),
    "DeadLetterStage.send": (DeadLetterStage, "send"),
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    seen: set[str] = set()
    for name, (cls, attr) in SPIED.items():
        original = getattr(cls, attr)

        def spy(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            seen.add(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, attr, spy)
    yield seen


class Failing(BaseConsumer):
    @before_enqueue
    def wanted(self) -> bool:
        return bool(self.params.payload["wanted"])

    def perform(self) -> None:
        raise RuntimeError("boom")


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, int]] = []

    def send(self, topic: str, params: Params, error: Any, attempts: int, group_id: str) -> None:
        self.sent.append((topic, params.offset, attempts))

    def send_unroutable(self, body: Any, error: Any, task_id: Any) -> str:
        raise AssertionError("nothing here is refused")


def app(backend: str) -> KBridge:
    kb = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, celery=Celery("shop", broker="memory://"))
    kb.topic("users", consumer=Failing, backend=backend, max_retries=1, retry_backoff=0.001, retry_backoff_max=0.001)
    return kb


def test_testclient_runs_the_listeners_steps_and_the_workers_runner(calls: set[str]) -> None:
    result = TestClient(app("celery")).publish("users", {"wanted": True})
    assert [(d.topic, d.attempts) for d in result.dead_lettered] == [("users.dlq", 2)]
    assert calls == set(SPIED)


def test_the_celery_task_runs_the_same_runner(calls: set[str]) -> None:
    kb = app("celery")
    sink = Sink()
    use_runtime(kb, Runtime.of(kb, sink))  # type: ignore[arg-type]
    message = to_wire(Params(topic="users", partition=0, offset=3, raw_payload=b'{"wanted": true}'))
    kb.perform_task.apply(args=["shop_users/users", [message]])
    assert sink.sent == [("users.dlq", 3, 2)]
    worker_side = {"PerformRunner.run", "ReentrancyStage.around", "RetryStage.on_failure", "DeadLetterStage.send"}
    assert calls == worker_side


def test_the_listener_with_the_inline_backend_runs_the_same_steps_and_runner(calls: set[str]) -> None:
    kb = app("inline")
    sink = Sink()
    proc = GroupProcessor(Runtime.of(kb, sink), kb.routes.groups["users"], threading.Event())  # type: ignore[arg-type]
    proc.consumer = FakeKafkaConsumer()  # type: ignore[assignment]
    proc._take(Fetched(TP, messages=[Params(topic="users", partition=0, offset=0, raw_payload=b'{"wanted": true}')]))
    assert sink.sent == [("users.dlq", 0, 2)]
    assert calls == set(SPIED)
