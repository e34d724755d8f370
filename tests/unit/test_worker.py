from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from kbridge import BaseConsumer, KBridge
from kbridge.backends.celery.task import TASK_NAME, MessageDeadLettered, TaskRefused, use_runtime
from kbridge.errors import DeserializationError, UnknownRouteError
from kbridge.interchange import to_wire
from kbridge.params import Params
from kbridge.runtime import Runtime

KAFKA = {"bootstrap_servers": "x:1"}


class Recorder(BaseConsumer):
    seen: list[tuple[str, list[Params]]] = []

    def perform(self) -> None:
        type(self).seen.append((self.topic.route_id, list(self.params_batch)))


def make_app(client_id: str = "shop", **topic_options: Any) -> tuple[KBridge, type[Recorder]]:
    consumer = type("Rec", (Recorder,), {"seen": []})
    app = KBridge(client_id=client_id, kafka=KAFKA, celery=Celery(client_id, broker="memory://"))
    app.topic("users", consumer=consumer, **topic_options)
    return app, consumer


class FakeDeadLetters:
    """Records what the worker dead-letters, instead of producing to Kafka."""

    def __init__(self, app: KBridge, refuse: int = 0) -> None:
        self.sent: list[tuple[str, Params, Any, int, str]] = []
        self.unroutable: list[tuple[dict[str, Any], Any, str | None]] = []
        self.refuse = refuse  # how many sends Kafka does not acknowledge first
        self.tries = 0
        use_runtime(app, Runtime.of(app, self))  # type: ignore[arg-type]

    def send(self, topic: str, params: Params, error: Any, attempts: int, group_id: str) -> None:
        self.tries += 1
        if self.tries <= self.refuse:
            raise ConnectionError("Kafka is down")
        self.sent.append((topic, params, error, attempts, group_id))

    def send_unroutable(self, body: dict[str, Any], error: Any, task_id: str | None) -> str:
        self.unroutable.append((body, error, task_id))
        return "shop.unroutable-0@0"


def wire(offset: int, raw: bytes | None = b'{"n": 1}') -> dict[str, Any]:
    return to_wire(Params(topic="users", partition=0, offset=offset, raw_payload=raw, key=b"\xff",
                          headers={"h": b"\x00"}, timestamp_ms=1000))


def test_a_dead_lettered_or_refused_task_is_an_expected_failure_never_a_success() -> None:
    app, consumer = make_app(max_retries=0)
    consumer.perform = fail  # type: ignore[method-assign]
    FakeDeadLetters(app)
    task = app.celery.tasks[TASK_NAME]
    assert set(task.throws) == {MessageDeadLettered, TaskRefused}  # logged without a traceback
    refused = task.apply(args=["nowhere/users", [wire(1)]])
    assert refused.state == "FAILURE" and isinstance(refused.result, TaskRefused)
    performed = task.apply(args=["shop_users/users", [wire(2)]])
    assert performed.state == "FAILURE" and isinstance(performed.result, MessageDeadLettered)


def test_task_is_registered_with_late_acks() -> None:
    app, _ = make_app()
    assert app.celery is not None
    task = app.celery.tasks[TASK_NAME]
    assert task.name == "kbridge.perform"
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.serializer == "json"


def test_known_route_runs_perform_with_rebuilt_params() -> None:
    app, consumer = make_app()
    app.celery.tasks[TASK_NAME].run("shop_users/users", [wire(7)])
    [(route_id, batch)] = consumer.seen
    assert route_id == "shop_users/users"
    [p] = batch
    assert (p.topic, p.partition, p.offset, p.key, p.headers) == ("users", 0, 7, b"\xff", {"h": b"\x00"})
    assert p.payload == {"n": 1}


def test_worker_uses_the_routes_deserializer_lazily() -> None:
    calls: list[bytes] = []

    def deser(raw: bytes) -> str:
        calls.append(raw)
        return raw.decode().upper()

    app, consumer = make_app(deserializer=deser)
    app.celery.tasks[TASK_NAME].run("shop_users/users", [wire(1, b"abc")])
    [(_, [p])] = consumer.seen
    assert calls == []
    assert p.payload == "ABC" and calls == [b"abc"]


def test_batch_of_messages_reaches_one_perform() -> None:
    app, consumer = make_app(batch_consuming=True)
    app.celery.tasks[TASK_NAME].run("shop_users/users", [wire(1), wire(2), wire(3)])
    [(_, batch)] = consumer.seen
    assert [p.offset for p in batch] == [1, 2, 3]


@pytest.mark.parametrize("route_id", ["shop_other/users", "users", "os:system"])
def test_unknown_route_is_refused_to_the_unroutable_topic_and_perform_never_runs(route_id: str) -> None:
    app, consumer = make_app()
    dead = FakeDeadLetters(app)
    with pytest.raises(TaskRefused, match=r"UnknownRouteError: .*; the task never ran, its body is in shop.unroutable"):
        app.celery.tasks[TASK_NAME].run(route_id, [wire(1), wire(2)])
    assert consumer.seen == [] and dead.sent == []  # never a dead-letter topic the task names itself
    [(body, error, _)] = dead.unroutable
    assert isinstance(error, UnknownRouteError) and route_id in str(error)
    assert body["args"] == [route_id, [wire(1), wire(2)]]  # the whole task, to inspect or replay by hand


def fail(self: Recorder) -> None:
    type(self).seen.append((self.topic.route_id, list(self.params_batch)))
    raise RuntimeError("boom")


def test_failure_without_retries_left_is_dead_lettered_and_acked() -> None:
    app, consumer = make_app(max_retries=0)
    consumer.perform = fail  # type: ignore[method-assign]
    dead = FakeDeadLetters(app)
    with pytest.raises(MessageDeadLettered, match=r"^1 message\(s\) from users-0@4 dead-lettered to users.dlq after "
                       r"1 attempt\(s\): RuntimeError: boom$"):  # Celery: FAILURE, an expected one, acked
        app.celery.tasks[TASK_NAME].run("shop_users/users", [wire(4)])
    [(topic, p, error, attempts, group_id)] = dead.sent
    assert (topic, p.offset, str(error), attempts, group_id) == ("users.dlq", 4, "boom", 1, "shop_users")


def test_failure_with_retries_left_is_retried_not_dead_lettered() -> None:
    app, consumer = make_app(max_retries=1)
    consumer.perform = fail  # type: ignore[method-assign]
    dead = FakeDeadLetters(app)
    with pytest.raises(RuntimeError, match="boom"):  # called directly, Celery's retry re-raises the error
        app.celery.tasks[TASK_NAME].run("shop_users/users", [wire(4)])
    assert dead.sent == []


def test_eager_retries_run_max_retries_plus_one_times_then_dead_letter() -> None:
    app, consumer = make_app(max_retries=2, retry_backoff=0.001)
    consumer.perform = fail  # type: ignore[method-assign]
    dead = FakeDeadLetters(app)
    result = app.celery.tasks[TASK_NAME].apply(args=["shop_users/users", [wire(4)]])
    assert result.state == "FAILURE" and isinstance(result.result, MessageDeadLettered)  # not a success
    assert len(consumer.seen) == 3
    [(topic, p, error, attempts, _)] = dead.sent
    assert (topic, p.offset, str(error), attempts) == ("users.dlq", 4, "boom", 3)


def test_unreadable_payload_is_dead_lettered_at_once() -> None:
    app, consumer = make_app(max_retries=5)
    consumer.perform = lambda self: self.params.payload  # type: ignore[method-assign]
    dead = FakeDeadLetters(app)
    with pytest.raises(MessageDeadLettered, match="DeserializationError"):
        app.celery.tasks[TASK_NAME].run("shop_users/users", [wire(9, b"{not json")])
    [(_, p, error, attempts, _)] = dead.sent
    assert (p.offset, type(error), attempts) == (9, DeserializationError, 1)


def test_two_apps_in_one_process_each_run_their_own_routes() -> None:
    one, one_consumer = make_app("one")
    two, two_consumer = make_app("two")
    FakeDeadLetters(one), FakeDeadLetters(two)
    one.celery.tasks[TASK_NAME].run("one_users/users", [wire(1)])
    two.celery.tasks[TASK_NAME].run("two_users/users", [wire(2)])
    assert [r for r, _ in one_consumer.seen] == ["one_users/users"]
    assert [r for r, _ in two_consumer.seen] == ["two_users/users"]


def test_task_is_not_registered_on_unrelated_celery_apps() -> None:
    make_app()
    assert TASK_NAME not in Celery("unrelated", broker="memory://").tasks


def test_max_retries_past_celerys_own_cap_of_3_run_every_attempt_then_dead_letter() -> None:
    app, consumer = make_app(max_retries=5, retry_backoff=0.001)
    consumer.perform = fail  # type: ignore[method-assign]
    dead = FakeDeadLetters(app)
    result = app.celery.tasks[TASK_NAME].apply(args=["shop_users/users", [wire(4)]])
    assert result.state == "FAILURE" and "after 6 attempt(s)" in str(result.result)
    assert len(consumer.seen) == 6
    [(_, p, error, attempts, _)] = dead.sent
    assert (p.offset, str(error), attempts) == (4, "boom", 6)


def test_a_dead_letter_kafka_refuses_is_retried_alone_and_perform_never_runs_again() -> None:
    app, consumer = make_app(max_retries=1, retry_backoff=0.001)
    consumer.perform = fail  # type: ignore[method-assign]
    dead = FakeDeadLetters(app, refuse=3)
    result = app.celery.tasks[TASK_NAME].apply(args=["shop_users/users", [wire(4)]])
    assert result.state == "FAILURE" and isinstance(result.result, MessageDeadLettered)
    assert len(consumer.seen) == 2  # max_retries + 1, however often the dead letter failed
    [(_, p, error, attempts, _)] = dead.sent
    assert (p.offset, attempts, dead.tries) == (4, 2, 4)
    assert (error.error_class, error.message) == ("builtins.RuntimeError", "boom")  # carried by the retry


def test_a_batch_dead_letter_retry_resends_only_what_kafka_did_not_take() -> None:
    app, consumer = make_app(max_retries=0, batch_consuming=True)
    consumer.perform = fail  # type: ignore[method-assign]
    dead = FakeDeadLetters(app)
    original = dead.send

    def second_fails_once(topic: str, params: Params, *rest: Any) -> None:
        if params.offset == 2 and not getattr(dead, "failed", False):
            dead.failed = True  # type: ignore[attr-defined]
            raise ConnectionError("Kafka is down")
        original(topic, params, *rest)

    dead.send = second_fails_once  # type: ignore[method-assign]
    app.celery.tasks[TASK_NAME].apply(args=["shop_users/users", [wire(1), wire(2), wire(3)]])
    assert [p.offset for _, p, *_ in dead.sent] == [1, 2, 3]
    assert len(consumer.seen) == 1


FORGED: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
    ("messages not a list", ("shop_users/users", "x"), {}, "messages must be a non-empty list"),
    ("empty messages", ("shop_users/users", []), {}, "messages must be a non-empty list"),
    ("message missing fields", ("shop_users/users", [{"topic": "users"}]), {}, "missing field 'partition'"),
    ("offset as a string", ("shop_users/users", [{**wire(1), "offset": "77"}]), {}, "field 'offset' must be int"),
    ("two messages on a per-message route", ("shop_users/users", [wire(1), wire(2)]), {}, "one message per task"),
    ("another topic's message", ("shop_users/users", [{**wire(1), "topic": "evil-topic"}]), {}, "not of users-0"),
    ("route id not a string", (7, [wire(1)]), {}, "route id must be a string"),
    ("missing argument", ("shop_users/users",), {}, "expected 2 arguments"),
    ("unknown kwarg", ("shop_users/users", [wire(1)]), {"x": 1}, "unknown keyword argument"),
    ("forged dead_letter resume", ("shop_users/users", [wire(1)]), {"dead_letter": {"sent": 0}}, "dead_letter must"),
]


@pytest.mark.parametrize(("case", "args", "kwargs", "problem"), FORGED, ids=[f[0] for f in FORGED])
def test_forged_tasks_never_run_and_go_whole_to_the_unroutable_topic(
    case: str, args: tuple[Any, ...], kwargs: dict[str, Any], problem: str
) -> None:
    app, consumer = make_app()
    dead = FakeDeadLetters(app)
    with pytest.raises(TaskRefused):
        app.celery.tasks[TASK_NAME].run(*args, **kwargs)
    assert consumer.seen == [] and dead.sent == []
    [(body, error, _)] = dead.unroutable
    assert problem in str(error)
    assert body["args"] == list(args) and body["kwargs"] == kwargs


def test_a_batch_larger_than_the_routes_max_batch_size_is_refused() -> None:
    app, consumer = make_app(batch_consuming=True, max_batch_size=2)
    dead = FakeDeadLetters(app)
    with pytest.raises(TaskRefused):
        app.celery.tasks[TASK_NAME].run("shop_users/users", [wire(1), wire(2), wire(3)])
    assert consumer.seen == [] and "at most 2 messages per task" in str(dead.unroutable[0][1])
    app.celery.tasks[TASK_NAME].run("shop_users/users", [wire(1), wire(2)])
    assert [[p.offset for p in batch] for _, batch in consumer.seen] == [[1, 2]]
