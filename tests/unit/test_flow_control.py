"""Flow-control steps through GroupProcessor with a fake Kafka consumer and the inline backend: expire_after,
delay_by, throttle, the dead-letter breaker, ticks; pattern routes and their checks."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kafka import TopicPartition

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.backends.celery.task import TaskRequest
from kbridge.backends.celery.tick import tick_request
from kbridge.errors import ConfigError, WireError
from kbridge.interchange import to_wire
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.steps import Fetched
from kbridge.params import Params
from kbridge.routing.mapper import PrefixMapper
from kbridge.routing.patterns import subscription
from kbridge.runtime import Runtime

TP = TopicPartition("users", 0)


class FakeKafkaConsumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def commit(self, offsets: dict[TopicPartition, Any]) -> None: ...

    def assignment(self) -> set[TopicPartition]:
        return self.assigned


class Letters:
    def __init__(self) -> None:
        self.sent: list[int] = []

    def send(self, topic: str, params: Params, error: BaseException, attempts: int, group_id: str) -> None:
        self.sent.append(params.offset)


class Users(BaseConsumer):
    performed: list[int] = []
    ticked: list[TopicPartition] = []

    @before_enqueue
    def readable(self) -> bool:
        return bool(self.params.payload)  # a payload that is not JSON raises: dead-lettered

    def perform(self) -> None:
        self.performed.extend(p.offset for p in self.params_batch)

    def tick(self) -> None:
        assert len(self.params_batch) == 0
        self.ticked.append(self.partition)


def processor(**options: Any) -> tuple[GroupProcessor, type[Users], Letters]:
    consumer = type("Users", (Users,), {"performed": [], "ticked": []})
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    letters = Letters()
    app.topic("users", consumer=consumer, backend="inline", **options)
    proc = GroupProcessor(Runtime.of(app, letters), app.routes.groups["users"], threading.Event())
    proc.consumer = FakeKafkaConsumer()  # type: ignore[assignment]
    return proc, consumer, letters


def msgs(offsets: range, age: float = 0.0, raw: bytes = b'{"x": 1}') -> list[Params]:
    now = time.time() * 1000
    return [Params(topic="users", partition=0, offset=o, raw_payload=raw, timestamp_ms=now - age * 1000,
                   receive_time_ms=now) for o in offsets]


def test_expired_messages_are_committed_counted_and_not_handed_over() -> None:
    proc, consumer, _ = processor(expire_after=60)
    events: list[dict[str, Any]] = []
    proc.monitor.subscribe("expired", lambda name, payload: events.append(payload))
    proc._take(Fetched(TP, messages=msgs(range(0, 5), age=3600) + msgs(range(5, 8))))
    assert consumer.performed == [5, 6, 7]
    assert proc.offsets.pending() == {TP: 8}
    assert proc.stats.expired == 5 and "expired=5" in proc.summary()
    assert events == [{"group_id": "shop_users", "topic": "users", "partition": 0, "messages": 5,
                       "first_offset": 0, "last_offset": 4}]


def test_delay_holds_the_partition_until_due_and_hands_over_what_is_due() -> None:
    proc, consumer, _ = processor(delay_by=0.3)
    proc._take(Fetched(TP, messages=msgs(range(0, 2), age=10) + msgs(range(2, 4))))
    assert consumer.performed == [0, 1]
    assert proc.offsets.pending() == {TP: 2}
    assert proc.consumer.paused == {TP}
    held = proc._held[TP]
    assert held.planned and 0.1 < held.retry_at - time.monotonic() <= 0.3
    proc._retry_held()
    assert consumer.performed == [0, 1]  # not yet due
    time.sleep(held.retry_at - time.monotonic() + 0.01)
    proc._retry_held()
    assert consumer.performed == [0, 1, 2, 3] and proc.consumer.paused == set()
    assert proc.offsets.pending() == {TP: 4}


def test_a_future_timestamp_delays_by_delay_by_at_most() -> None:
    proc, _, _ = processor(delay_by=0.5)
    proc._take(Fetched(TP, messages=msgs(range(0, 1), age=-3600)))  # an hour in the future
    assert proc._held[TP].retry_at - time.monotonic() <= 0.5


def test_throttle_hands_over_at_most_limit_per_window() -> None:
    proc, consumer, _ = processor(throttle=(3, 0.2))
    proc._take(Fetched(TP, messages=msgs(range(0, 10))))
    assert consumer.performed == [0, 1, 2] and proc.consumer.paused == {TP}
    started = time.monotonic()
    while TP in proc._held:
        proc._retry_held()
        time.sleep(0.01)
    assert consumer.performed == list(range(10))
    assert time.monotonic() - started >= 0.55  # three more windows of 0.2 s


def test_breaker_holds_the_route_after_the_threshold_and_resumes_after_cooldown() -> None:
    proc, consumer, letters = processor(dead_letter_cooldown=0.3)
    tripped: list[dict[str, Any]] = []
    proc.monitor.subscribe("breaker.tripped", lambda name, payload: tripped.append(payload))
    batch = [m if m.offset % 10 == 0 else Params(topic="users", partition=0, offset=m.offset, raw_payload=b"{bad")
             for m in msgs(range(0, 1000))]  # 90% poison
    proc._take(Fetched(TP, messages=batch))
    assert tripped and proc.consumer.paused == {TP}
    assert 50 <= len(letters.sent) <= 120, len(letters.sent)  # around the threshold, not 900
    assert proc.offsets.pending()[TP] == proc._held[TP].offset  # what was handled before is committable
    other = TopicPartition("users", 1)
    proc._take(Fetched(other, messages=[Params(topic="users", partition=1, offset=0, raw_payload=b"{}")]))
    assert other in proc.consumer.paused  # the whole route is held
    time.sleep(0.35)
    proc._retry_held()
    assert len(tripped) == 2 and len(letters.sent) < 130  # tried again message by message, tripped at once


def test_breaker_is_off_with_none_and_healthy_batches_go_in_one_piece() -> None:
    proc, _, letters = processor(dead_letter_max_ratio=None)
    proc._take(Fetched(TP, messages=[Params(topic="users", partition=0, offset=o, raw_payload=b"{bad")
                                     for o in range(300)]))
    assert len(letters.sent) == 300 and not proc._held
    proc, consumer, _ = processor()
    proc._take(Fetched(TP, messages=msgs(range(500))))
    assert consumer.performed == list(range(500))


def test_ticks_run_inline_for_idle_assigned_partitions_only() -> None:
    proc, consumer, _ = processor(tick_interval=0.1)
    busy, idle = TopicPartition("users", 0), TopicPartition("users", 1)
    proc.consumer.assigned = {busy, idle}  # type: ignore[union-attr]
    ticks = proc.chain.ticks[0]
    ticks.idle(proc.consumer.assignment(), proc._route_of)  # type: ignore[union-attr]
    time.sleep(0.12)
    proc._take(Fetched(busy, messages=msgs(range(0, 1))))
    ticks.idle(proc.consumer.assignment(), proc._route_of)  # type: ignore[union-attr]
    assert consumer.ticked == [idle]


def test_flow_options_are_validated() -> None:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    with pytest.raises(ConfigError) as err:
        app.topic("users", consumer=Users, backend="inline", expire_after=-1, throttle=(0, 1), delay_by=5,
                  tick_interval="1", dead_letter_max_ratio=1.5, dead_letter_cooldown=0)
    text = str(err.value)
    for name in ("expire_after", "throttle must be (LIMIT, SECONDS)", "tick_interval", "dead_letter_max_ratio",
                 "dead_letter_cooldown"):
        assert name in text


def test_pattern_routes_resolve_topics_and_subscribe_by_one_regex() -> None:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    with app.consumer_group("events") as group:
        exact = group.topic("events.audit", consumer=Users, backend="inline")
        route = group.pattern("all_events", r"events\.[a-z]+", consumer=Users, backend="inline")
    assert route.route_id == "shop_events/all_events" and app.routes.find("shop_events/all_events") is route
    assert group.route_for("events.audit") is exact and group.route_for("events.orders") is route
    with pytest.raises(KeyError):
        group.route_for("other")
    topics, regex = subscription(PrefixMapper("acme."), group.topics, group.patterns.values())
    assert topics == [] and regex == r"^(?:acme\.events\.audit|acme\.(?:events\.[a-z]+))$"
    with pytest.raises(ConfigError, match="matches its own dead_letter_topic"):
        with app.consumer_group("loop") as g:
            g.pattern("loop", r".*", consumer=Users, backend="inline")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        group.pattern("broken", r"events\.(", consumer=Users, backend="inline")


def test_forged_tasks_naming_a_pattern_route_with_another_topic_are_refused() -> None:
    from celery import Celery

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, celery=Celery("t"))
    with app.consumer_group("events") as group:
        group.pattern("all_events", r"events\..+", consumer=Users, tick_interval=5, batch_consuming=True)
        group.topic("plain", consumer=Users)
    runtime = Runtime.of(app, Letters())

    def wire(topic: str, offset: int = 1) -> dict[str, Any]:
        return to_wire(Params(topic=topic, partition=0, offset=offset, raw_payload=b"{}"))

    assert TaskRequest(runtime, ("shop_events/all_events", [wire("events.x")]), {}).route.name == "all_events"
    with pytest.raises(WireError, match="not of a topic matching"):
        TaskRequest(runtime, ("shop_events/all_events", [wire("payments")]), {})
    with pytest.raises(WireError, match="not of events.x-0"):
        TaskRequest(runtime, ("shop_events/all_events", [wire("events.x"), wire("events.y", 2)]), {})
    assert tick_request(runtime, ("shop_events/all_events", "events.x", 2), {})[1] == TopicPartition("events.x", 2)
    for args, problem in [(("shop_events/all_events", "payments", 0), "not one route"),
                          (("shop_events/plain", "plain", 0), "no tick_interval"),
                          (("shop_events/all_events", "events.x", -1), "partition must be")]:
        with pytest.raises(WireError, match=problem):
            tick_request(runtime, args, {})


def test_testing_client_routes_pattern_topics_and_waits_out_planned_holds() -> None:
    from kbridge.testing import TestClient

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    with app.consumer_group("events") as group:
        group.pattern("all_events", r"events\..+", consumer=Users, backend="inline", throttle=(2, 0.2))
    client = TestClient(app)
    started = time.monotonic()
    result = client.publish_many("events.orders", [{"n": i} for i in range(5)])
    assert time.monotonic() - started >= 0.35  # two windows waited
    assert [p.topic for run in result.runs for p in run.params_batch] == ["events.orders"] * 5
    assert client.committed("events.orders") == 5


def test_info_and_flow_show_every_flow_option_and_pattern_routes(tmp_path: Any, monkeypatch: Any) -> None:
    from click.testing import CliRunner

    from kbridge.cli import main

    (tmp_path / "flow_render_app.py").write_text(
        "from kbridge import BaseConsumer, KBridge\n"
        "class C(BaseConsumer):\n"
        "    def perform(self): ...\n"
        "app = KBridge(client_id='shop', kafka={'bootstrap_servers': '127.0.0.1:1'})\n"
        "app.topic('orders', consumer=C, backend='inline', expire_after=600, delay_by=3, throttle=(50, 1.0),\n"
        "          tick_interval=30, dead_letter_max_ratio=0.2, dead_letter_min_messages=50, dead_letter_cooldown=5)\n"
        "with app.consumer_group('events') as g:\n"
        "    g.pattern('all_events', r'events\\..+', consumer=C, backend='inline', dead_letter_max_ratio=None)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for command in ("info", "flow"):
        result = CliRunner().invoke(main, [command, "--app", "flow_render_app:app"], env={"COLUMNS": "1000"})
        assert result.exit_code == 0, result.output
        assert ("expire_after=600s delay_by=3s tick_interval=30s throttle=50/1s dead_letter_breaker=0.2/50+5s"
                in result.output)
        assert "all_events=/events\\..+/" in result.output and "dead_letter_breaker=off" in result.output


def test_testing_client_ticks_through_the_worker_runner() -> None:
    from kbridge.testing import TestClient

    failures: list[str] = []

    class Flaky(Users):
        def tick(self) -> None:
            if self.partition.partition == 1:
                raise RuntimeError("tick failed")
            super().tick()

        def after_failure(self, exc: BaseException) -> None:
            failures.append(str(exc))

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("users", consumer=Flaky, backend="inline", tick_interval=5)
    client = TestClient(app)
    consumer = client.tick("users", partition=0)
    assert consumer.ticked[-1] == TopicPartition("users", 0) and len(consumer.params_batch) == 0  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="tick failed"):
        client.tick("users", partition=1)
    assert failures == ["tick failed"]


def test_testing_client_reports_a_tripped_breaker_at_once() -> None:
    from kbridge.errors import KBridgeError
    from kbridge.testing import TestClient

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("users", consumer=Users, backend="inline")  # the default breaker: 0.5 of 100, 60 s cooldown
    client = TestClient(app)
    started = time.monotonic()
    with pytest.raises(KBridgeError, match="dead-letter breaker open"):
        client.publish_many("users", [b"{bad"] * 150)
    assert time.monotonic() - started < 5 and len(client.dead_letters) == 100


def test_breaker_sees_the_dead_letters_of_delayed_messages() -> None:
    proc, _, letters = processor(delay_by=0.05, dead_letter_cooldown=5)
    poison = [Params(topic="users", partition=0, offset=o, raw_payload=b"{bad", timestamp_ms=time.time() * 1000)
              for o in range(300)]
    proc._take(Fetched(TP, messages=poison))
    assert letters.sent == [] and proc._held[TP].planned  # waiting for the delay
    time.sleep(0.06)
    proc._retry_held()
    assert "breaker" in proc._held[TP].reason and len(letters.sent) <= 100


def test_a_pattern_route_may_not_match_kbridges_own_topics_or_dead_letter_topics() -> None:
    from kbridge import BaseConsumer, KBridge
    from kbridge.errors import ConfigError

    class Sink(BaseConsumer):
        def perform(self) -> None:
            return None

    app = KBridge(client_id="combo", kafka={"bootstrap_servers": "127.0.0.1:9092"})
    app.topic("orders", consumer=Sink, backend="inline")
    with pytest.raises(ConfigError) as own:
        with app.consumer_group("internal") as group:
            group.pattern("everything", r"[a-z.]+", consumer=Sink, backend="inline", dead_letter_topic="DEAD")
    text = str(own.value)
    assert "'combo.unroutable'" in text and "'combo.kbridge.reports'" in text and "'orders.dlq'" in text
    with app.consumer_group("tenants") as group:
        group.pattern("tenants", r"tenant\.[a-z]+", consumer=Sink, backend="inline")
    with pytest.raises(ConfigError, match="dead_letter_topic 'tenant.dlq' matches pattern route 'tenants'"):
        app.topic("late", consumer=Sink, backend="inline", dead_letter_topic="tenant.dlq")
