"""A failure whose text cannot be encoded as UTF-8 (a lone surrogate, which json.loads returns for
"\\ud800") is still dead-lettered, cut down if need be: never held or retried forever."""
from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.backends.celery.task import MessageDeadLettered, TaskRefused, run_task
from kbridge.config import Settings
from kbridge.dlq import DeadLetters
from kbridge.interchange import to_wire
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.steps import Fetched
from kbridge.params import Params
from kbridge.runtime import Runtime
from tests.unit.test_producer import FakeKafkaProducer

from .test_processor import TP, FakeKafkaConsumer

KAFKA = {"bootstrap_servers": "x:1"}


def real_dead_letters() -> tuple[DeadLetters, FakeKafkaProducer]:
    fake = FakeKafkaProducer()
    dead = DeadLetters(Settings.build({"client_id": "shop", "kafka": KAFKA}))
    dead._get_producer = lambda: fake  # type: ignore[method-assign]
    return dead, fake


class Named(BaseConsumer):
    @before_enqueue
    def valid_name(self) -> bool:
        name = self.params.payload["name"]
        if not name.isascii():
            raise ValueError(f"bad name {name}")   # an ordinary filter, quoting the input
        return True

    def perform(self) -> None:
        pass


def test_listener_filter_error_with_a_surrogate_holds_the_partition_forever() -> None:
    app = KBridge(client_id="shop", kafka=KAFKA)
    app.topic("users", consumer=Named, backend="inline")
    dead, fake = real_dead_letters()
    proc = GroupProcessor(Runtime.of(app, dead), app.routes.groups["users"], threading.Event())
    proc.consumer = FakeKafkaConsumer()  # type: ignore[assignment]
    proc._backoff = lambda attempts: 0.0  # type: ignore[method-assign]
    raw = b'{"name": "\\ud800"}'  # valid JSON; json.loads gives a lone surrogate
    proc._take(Fetched(TP, messages=[Params(topic="users", partition=0, offset=0, raw_payload=raw)]))
    for _ in range(20):
        proc._retry_held()
    held = proc._held.get(TP)
    print("held:", held and held.reason, "attempts", held and held.attempts)
    # Rule 5: a filter that raises dead-letters that message; it is neither dropped nor retried forever.
    assert TP not in proc._held, "partition held forever: the letter can never be built"
    assert len(fake.sent) == 1


class FakeTask:
    class request:  # noqa: N801
        id = "t1"
        retries = 0

    def __init__(self) -> None:
        self.retries: list[dict[str, Any]] = []

    def retry(self, **kw: Any) -> Exception:
        self.retries.append(kw)
        return RuntimeError("celery Retry")


class Failing(BaseConsumer):
    def perform(self) -> None:
        raise ValueError("bad name " + self.params.payload["name"])


def test_worker_dead_letter_with_a_surrogate_is_retried_forever_never_sent() -> None:
    app = KBridge(client_id="shop", kafka=KAFKA, celery=Celery("shop", broker="memory://"))
    app.topic("users", consumer=Failing, max_retries=0)
    dead, fake = real_dead_letters()
    runtime = Runtime.of(app, dead)
    msg = to_wire(Params(topic="users", partition=0, offset=4, raw_payload=b'{"name": "\\ud800"}'))
    task = FakeTask()
    try:
        run_task(task, runtime, ("shop_users/users", [msg]), {})
    except (RuntimeError, MessageDeadLettered):  # a scheduled retry, or the letter sent
        pass
    print("retries scheduled:", [(type(r["exc"]).__name__, r.get("kwargs")) for r in task.retries])
    assert fake.sent, "the letter was never produced; the task is retried (dead-letter only) forever"


def test_forged_task_with_a_surrogate_kwarg_name_loops_forever_instead_of_going_to_unroutable() -> None:
    app = KBridge(client_id="shop", kafka=KAFKA, celery=Celery("shop", broker="memory://"))
    app.topic("users", consumer=Failing)
    dead, fake = real_dead_letters()
    runtime = Runtime.of(app, dead)
    msg = to_wire(Params(topic="users", partition=0, offset=4, raw_payload=b"{}"))
    task = FakeTask()
    try:
        run_task(task, runtime, ("shop_users/users", [msg]), {"\udcff": 1})
    except (RuntimeError, TaskRefused):  # a scheduled retry, or the task refused
        pass
    print("retries scheduled:", [type(r["exc"]).__name__ for r in task.retries])
    assert [s["topic"] for s in fake.sent] == ["shop.unroutable"]
