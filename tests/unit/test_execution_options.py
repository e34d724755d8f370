"""skip_duplicates' stage over the in-memory store, and the validation of ordering and skip_duplicates."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from kbridge import BaseConsumer, KBridge
from kbridge.errors import ConfigError
from kbridge.instrumentation import Monitor
from kbridge.params import Params, ParamsBatch
from kbridge.perform import DeadLettered, Job, Performed, Retry, Skipped, build_runner
from kbridge.perform.duplicates import DuplicateBusy, DuplicateSkipStage, MemoryStore
from kbridge.perform.gates import gate_stages, store_problems
from kbridge.render import flow_table, routes_table
from kbridge.runtime import Runtime

PERFORMED: list[list[int]] = []


class Counting(BaseConsumer):
    def perform(self) -> None:
        PERFORMED.append([p.offset for p in self.params_batch])


class Failing(BaseConsumer):
    def perform(self) -> None:
        raise RuntimeError("no")


class Sink:
    def send(self, topic: str, params: Params, error: Any, attempts: int, group_id: str) -> None: ...
    def send_unroutable(self, body: Any, error: Any, task_id: Any) -> None: ...


class Once:
    def perform_again(self, job: Job, retry: Retry) -> None:
        raise AssertionError("no retry expected")

    def dead_letter_again(self, job: Job, pending: Any) -> None:
        raise AssertionError("no dead-letter retry expected")


def job(route: Any, offsets: list[int], delivery: Any = None) -> Job:
    return Job(route, ParamsBatch([Params(topic="t", partition=0, offset=o, raw_payload=b"{}") for o in offsets]),
               delivery=delivery)


@pytest.fixture(autouse=True)
def _clear() -> None:
    PERFORMED.clear()


def app(**options: Any) -> tuple[KBridge, Any]:
    kb = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"})
    return kb, kb.topic("t", consumer=options.pop("consumer", Counting), backend="inline", **options)


def test_a_completed_offset_is_skipped_when_delivered_again_and_the_event_counts_it() -> None:
    _, route = app(skip_duplicates=True, batch_consuming=True)
    monitor, events = Monitor(), []
    monitor.subscribe("duplicate_skipped", lambda e, p: events.append(p))
    runner = build_runner(Sink(), enforce_timeout=False, extra=[DuplicateSkipStage(MemoryStore(), monitor)])
    assert runner.run(job(route, [0, 1, 2]), Once()) == Performed(1)
    assert runner.run(job(route, [0, 1, 2]), Once()) == Skipped("duplicate", 0)
    # Another batch boundary: only the messages that never completed run.
    assert runner.run(job(route, [2, 3, 4]), Once()) == Performed(1)
    assert PERFORMED == [[0, 1, 2], [3, 4]]
    assert [(p["offset"], p["messages"]) for p in events] == [(0, 3), (2, 1)]


def test_a_dead_lettered_offset_counts_as_completed() -> None:
    _, route = app(skip_duplicates=True, consumer=Failing, max_retries=0)
    runner = build_runner(Sink(), enforce_timeout=False, extra=[DuplicateSkipStage(MemoryStore())])
    assert isinstance(runner.run(job(route, [7]), Once()), DeadLettered)
    assert runner.run(job(route, [7]), Once()) == Skipped("duplicate", 0)


class Delivery:
    def __init__(self, task_id: str) -> None:
        self.id = task_id


def test_a_copy_running_elsewhere_makes_this_one_wait_and_the_same_task_id_reclaims() -> None:
    _, route = app(skip_duplicates=True)
    store = MemoryStore()
    stage = DuplicateSkipStage(store)
    assert stage.before(job(route, [5], Delivery("task-a"))) is None  # claimed by task-a, which then "dies"
    waiting = stage.before(job(route, [5], Delivery("task-b")))
    assert isinstance(waiting, Retry) and isinstance(waiting.error, DuplicateBusy)
    assert stage.before(job(route, [5], Delivery("task-a"))) is None  # redelivered after a kill -9: runs again
    stage.after(job(route, [5], Delivery("task-a")), Performed(1))
    assert stage.before(job(route, [5], Delivery("task-b"))) == Skipped("duplicate", 0)


def test_routes_without_the_options_get_no_gate_stage() -> None:
    kb, _ = app()
    assert gate_stages(Runtime.of(kb, dead_letters=Sink())) == []
    kb2, _ = app(skip_duplicates=True)
    assert [type(s) for s in gate_stages(Runtime.of(kb2, dead_letters=Sink()))] == [DuplicateSkipStage]


@pytest.mark.parametrize(("options", "expected"), [
    ({"ordering": "offset"}, "ordering must be 'partition', 'key' or None, got 'offset'"),
    ({"ordering": "key", "backend": "inline"}, "ordering='key' is for backend='celery'"),
    ({"ordering": "key", "batch_consuming": True}, "ordering='key' runs one message per task"),
    ({"skip_duplicates": "yes"}, "skip_duplicates must be True or False, got 'yes'"),
])
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], expected: str) -> None:
    kb = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"}, celery=Celery("c", broker="redis://x:1/0"))
    with pytest.raises(ConfigError) as info:
        kb.topic("t", consumer=Counting, **options)
    assert expected in str(info.value)


def test_skip_duplicates_on_a_rabbitmq_broker_needs_a_redis_url() -> None:
    kb = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"}, celery=Celery("c", broker="amqp://x:1//"))
    kb.topic("t", consumer=Counting, skip_duplicates=True)
    assert "set duplicate_store_url='redis://...'" in store_problems(Runtime.of(kb, dead_letters=Sink()))[0]
    kb2 = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"}, celery=Celery("c", broker="amqp://x:1//"),
                  duplicate_store_url="redis://y:2/0")
    kb2.topic("t", consumer=Counting, skip_duplicates=True)
    assert store_problems(Runtime.of(kb2, dead_letters=Sink())) == []


def test_ordering_on_a_rabbitmq_broker_is_refused_when_a_listener_would_serve_it_and_only_then() -> None:
    from kbridge.listener.process import listener_process

    kb = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"}, celery=Celery("c", broker="amqp://x:1//"))
    kb.topic("t", consumer=Counting, ordering="key")
    kb.topic("once", consumer=Counting, skip_duplicates=True)
    kb.topic("plain", consumer=Counting)
    with pytest.raises(ConfigError) as info:
        listener_process(kb, kb.routes.select(None))
    assert "ordering='key' needs a plain redis://" in str(info.value)
    assert "skip_duplicates=True remembers completed offsets in Redis" in str(info.value)
    listener_process(kb, kb.routes.select(["plain"]))  # another group of the same app starts
    # a worker runs every other route, and retries a skip_duplicates task with the reason
    runtime = Runtime.of(kb, dead_letters=Sink())
    [stage] = [s for s in gate_stages(runtime) if isinstance(s, DuplicateSkipStage)]
    message = Params(topic="once", partition=0, offset=1, raw_payload=b"{}")
    outcome = stage.before(Job(kb.routes.find("c_once/once"), ParamsBatch([message])))
    assert isinstance(outcome, Retry) and "skip_duplicates=True remembers" in str(outcome.error)


@pytest.mark.parametrize(("values", "expected"), [
    ({"duplicate_ttl": 0}, "duplicate_ttl must be a number of seconds > 0"),
    ({"duplicate_store_url": "amqp://x"}, "duplicate_store_url must be a redis:// URL"),
])
def test_bad_settings_are_refused(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"}, **values)
    assert expected in str(info.value)


def test_info_and_flow_show_the_options() -> None:
    kb = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"}, celery=Celery("c", broker="redis://x:1/0"))
    kb.topic("t", consumer=Counting, ordering="key", skip_duplicates=True)
    kb.topic("u", consumer=Counting)
    kb.topic("packed", consumer=Counting, pack=25)
    from rich.console import Console

    out = Console(width=400)
    with out.capture() as captured:
        out.print(routes_table(kb), flow_table(kb))
    lines = captured.get().splitlines()
    assert sum("ordering=key" in line and "skip_duplicates=yes" in line for line in lines) == 2
    assert not any("ordering" in line for line in lines if " u " in line)
    assert sum("pack=25" in line for line in lines) == 2


def test_info_masks_the_duplicate_store_password() -> None:
    from kbridge.render import masked_url, settings_table

    assert masked_url("redis://:s3cret@redis.internal:6380/2") == "redis://:*****@redis.internal:6380/2"
    assert masked_url("redis://user:s3cret@h/0") == "redis://user:*****@h/0"
    assert masked_url("redis://h:1/0") == "redis://h:1/0"
    kb = KBridge(client_id="c", kafka={"bootstrap_servers": "x:1"}, duplicate_store_url="redis://:s3cret@h:1/0")
    from rich.console import Console

    out = Console(width=300)
    with out.capture() as captured:
        out.print(settings_table(kb))
    assert "s3cret" not in captured.get() and "duplicate_store_url" in captured.get()


class Unreachable(MemoryStore):
    def claim(self, *args: Any, **kwargs: Any) -> tuple[set[int], bool]:
        raise ConnectionError("redis is down")


def test_an_unreachable_store_retries_the_message_rather_than_running_it_unchecked() -> None:
    _, route = app(skip_duplicates=True)
    outcome = DuplicateSkipStage(Unreachable()).before(job(route, [1]))
    assert isinstance(outcome, Retry) and isinstance(outcome.error, ConnectionError)
    assert PERFORMED == []


def test_each_topic_of_an_ordered_pattern_route_keeps_its_own_order_state() -> None:
    """Two topics matching one pattern route are two orders: sharing state would skip the second's offsets."""
    from kbridge.backends.celery.ordering import registration

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:9092"},
                  celery=Celery("shop", broker="redis://127.0.0.1:1/0"))
    with app.consumer_group("tenants") as group:
        route = group.pattern("tenants", r"tenant\..+", consumer=Counting, ordering="partition")
    states = {args[0] for topic in ("tenant.acme", "tenant.bob")
              for args in registration(route, [Params(topic=topic, partition=0, offset=5, raw_payload=b"{}")])}
    assert states == {"kbridge.order.shop_tenants.tenant.acme.0", "kbridge.order.shop_tenants.tenant.bob.0"}
