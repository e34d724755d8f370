"""pack=N: option validation, how a call becomes tasks, and the worker running each packed message on its own."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from celery.exceptions import Reject

from kbridge import BaseConsumer
from kbridge.backends.celery.task import TASK_NAME, MessageDeadLettered, TaskRefused
from kbridge.errors import ConfigError
from kbridge.routing.pack import task_time_limits, task_units

from .test_worker import FakeDeadLetters, make_app, wire


def test_pack_option_is_validated() -> None:
    for bad in (0, -1, 1001, 2.5, True, "10"):
        with pytest.raises(ConfigError, match="pack must be an integer from 1 to 1000"):
            make_app(pack=bad)
    with pytest.raises(ConfigError, match="with batch_consuming=True"):
        make_app(pack=5, batch_consuming=True)
    with pytest.raises(ConfigError, match="backend 'inline' runs perform"):
        make_app(pack=5, backend="inline")
    app, _ = make_app(pack=5)
    assert app.routes.find("shop_users/users").pack == 5
    assert make_app()[0].routes.find("shop_users/users").pack is None


def test_a_call_becomes_packs_of_at_most_n_and_the_limits_cover_the_pack() -> None:
    route = make_app(pack=4, timeout=2)[0].routes.find("shop_users/users")
    assert [list(u) for u in task_units(route, list(range(10)))] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert task_time_limits(route, 10.0) == (18.0, 8.0)
    plain = make_app()[0].routes.find("shop_users/users")
    assert [list(u) for u in task_units(plain, [1, 2])] == [[1], [2]]


SENT: list[mock.MagicMock] = []


def run(app: Any, *args: Any, retries: int = 0, **kwargs: Any) -> mock.MagicMock:
    """Runs the task body as a worker would, with its apply_async (the next attempts) recorded."""
    task = app.celery.tasks[TASK_NAME]
    task.push_request(id="pack-1", retries=retries, delivery_info={"routing_key": "celery"})
    try:
        with mock.patch.object(task, "apply_async") as sent:
            SENT.append(sent)
            task.run(*args, **kwargs)
        return sent
    finally:
        task.pop_request()


def test_each_packed_message_performs_alone_and_a_failure_goes_on_as_its_own_task() -> None:
    app, consumer = make_app(pack=3, max_retries=2)
    FakeDeadLetters(app)
    original = consumer.perform

    def perform(self: BaseConsumer) -> None:
        if self.params.offset == 8:
            raise RuntimeError("bad message")
        original(self)

    consumer.perform = perform  # type: ignore[method-assign]
    sent = run(app, "shop_users/users", [wire(7), wire(8), wire(9)])
    assert [[p.offset for p in batch] for _, batch in consumer.seen] == [[7], [9]]
    [call] = sent.call_args_list
    assert call.kwargs["args"] == ["shop_users/users", [wire(8)]]
    assert call.kwargs["retries"] == 1 and call.kwargs["kwargs"] == {}
    assert call.kwargs["soft_time_limit"] == 60.0


def test_a_packed_message_out_of_retries_is_dead_lettered_alone() -> None:
    app, consumer = make_app(pack=3, max_retries=2)
    letters = FakeDeadLetters(app)
    consumer.perform = lambda self: (_ for _ in ()).throw(RuntimeError("bad"))  # type: ignore[method-assign]
    with pytest.raises(MessageDeadLettered, match="1 of 1 message"):  # Celery's state says so
        run(app, "shop_users/users", [wire(8)], retries=2)
    [(topic, params, _, attempts, _)] = letters.sent
    assert (topic, params.offset, attempts) == ("users.dlq", 8, 3)


def test_a_dead_letter_kafka_refuses_is_retried_alone() -> None:
    app, consumer = make_app(pack=3, max_retries=0)
    letters = FakeDeadLetters(app, refuse=1)
    consumer.perform = lambda self: (_ for _ in ()).throw(RuntimeError("bad"))  # type: ignore[method-assign]
    with pytest.raises(MessageDeadLettered, match=r"offsets 8\)"):
        run(app, "shop_users/users", [wire(7), wire(8)])
    sent = SENT[-1]
    assert [p.offset for _, p, *_ in letters.sent] == [8]
    [call] = sent.call_args_list
    assert call.kwargs["args"] == ["shop_users/users", [wire(7)]]
    assert call.kwargs["kwargs"]["dead_letter"]["tries"] == 2


def test_a_next_attempt_the_broker_refuses_requeues_the_whole_pack() -> None:
    app, consumer = make_app(pack=3)
    FakeDeadLetters(app)
    consumer.perform = lambda self: (_ for _ in ()).throw(RuntimeError("bad"))  # type: ignore[method-assign]
    task = app.celery.tasks[TASK_NAME]
    task.push_request(id="pack-1", retries=0, delivery_info={})
    try:
        with mock.patch.object(task, "apply_async", side_effect=ConnectionError("broker down")), \
                pytest.raises(Reject) as info:
            task.run("shop_users/users", [wire(7), wire(8)])
    finally:
        task.pop_request()
    assert info.value.requeue is True


def test_forged_packs_are_refused() -> None:
    app, consumer = make_app(pack=2)
    letters = FakeDeadLetters(app)
    with pytest.raises(TaskRefused):
        run(app, "shop_users/users", [wire(1), wire(2), wire(3)])  # more than pack
    resume = {"error_class": "E", "message": "m", "attempts": 1, "sent": 0, "tries": 1}
    with pytest.raises(TaskRefused):
        run(app, "shop_users/users", [wire(1), wire(2)], dead_letter=resume)  # a resume names one message
    assert consumer.seen == []
    assert [str(e) for _, e, _ in letters.unroutable] == [
        "route 'shop_users/users' takes at most 2 message(s) per task, got 3",
        "dead_letter retries one message of a pack, got 2",
    ]
    plain, plain_consumer = make_app()
    plain_letters = FakeDeadLetters(plain)
    with pytest.raises(TaskRefused):
        run(plain, "shop_users/users", [wire(1), wire(2)])
    assert plain_consumer.seen == [] and len(plain_letters.unroutable) == 1


def test_the_timeout_applies_to_each_packed_message() -> None:
    import time

    from kbridge.errors import PerformTimeout

    app, consumer = make_app(pack=3, timeout=0.3)
    FakeDeadLetters(app)
    failures: list[BaseException] = []
    original = consumer.perform

    def perform(self: BaseConsumer) -> None:
        if self.params.offset == 8:
            for _ in range(100):  # Python code, interruptible: 2 s in all
                time.sleep(0.02)
        original(self)

    consumer.perform = perform  # type: ignore[method-assign]
    consumer.after_failure = lambda self, exc: failures.append(exc)  # type: ignore[method-assign]
    started = time.monotonic()
    sent = run(app, "shop_users/users", [wire(7), wire(8), wire(9)])
    assert time.monotonic() - started < 1.5, "the slow message was stopped at its own timeout"
    assert [[p.offset for p in batch] for _, batch in consumer.seen] == [[7], [9]]
    assert [type(e) for e in failures] == [PerformTimeout]
    [call] = sent.call_args_list
    assert call.kwargs["args"] == ["shop_users/users", [wire(8)]]


def test_pack_and_ordering_are_refused_together() -> None:
    from kbridge.routing.pack import pack_problems

    [problem] = pack_problems("topic 'orders'", {"pack": 10, "ordering": "key"}, "celery", False)
    assert "ordering" in problem and "one or the other" in problem


def test_a_packed_message_has_its_own_delivery_id_which_its_next_attempt_task_reuses() -> None:
    from kbridge.backends.celery.pack import delivery_of

    assert delivery_of("t1", 1, 7).id == "t1"  # a message alone: its task's id
    assert delivery_of("t1", 10, 7).id == "t1-7" == delivery_of("t1", 10, 7).id  # stable across redelivery
    assert delivery_of("t1", 10, 8).id != delivery_of("t1", 10, 7).id
