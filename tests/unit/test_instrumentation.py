"""Instrumentation without services: the event list, where events are emitted, and each ready-made listener."""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import TopicPartition
from prometheus_client import generate_latest

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.cli import main as kbridge_cli
from kbridge.dlq import DeadLetters
from kbridge.errors import ConfigError, KBridgeError
from kbridge.instrumentation import EVENTS, Monitor
from kbridge.instrumentation.health import HealthServer, HealthTracker
from kbridge.instrumentation.logging import LoggingListener
from kbridge.instrumentation.proctitle import ProctitleListener
from kbridge.instrumentation.prometheus import PrometheusListener
from kbridge.lag import LIST_OFFSETS, PartitionLag
from kbridge.listener.process import listener_process
from kbridge.listener.processor import GroupProcessor
from kbridge.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
TP = TopicPartition("users", 0)


class Recorder:
    """Subscribes to every event and keeps (event, payload) in order."""

    def __init__(self, monitor: Monitor) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        monitor.subscribe("*", self)

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        self.seen.append((event, dict(payload)))

    def names(self) -> list[str]:
        return [e for e, _ in self.seen]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [p for e, p in self.seen if e == event]


# -- the monitor -----------------------------------------------------------------------------------


def test_subscribing_to_an_unknown_event_is_refused() -> None:
    monitor = Monitor()
    with pytest.raises(KBridgeError, match=r"unknown event 'perform.finshed'; known events: app.started"):
        monitor.subscribe("perform.finshed", lambda e, p: None)
    with pytest.raises(KBridgeError, match="unknown event"):
        monitor.unsubscribe("nope", lambda e, p: None)
    assert not any(monitor.listens(e) for e in EVENTS)


def test_star_subscribes_to_every_event_and_unsubscribe_undoes_it() -> None:
    monitor = Monitor()
    seen: list[str] = []
    fn = monitor.subscribe("*", lambda e, p: seen.append(e))
    assert all(monitor.listens(e) for e in EVENTS)
    monitor.instrument("commit", group_id="g", offsets={})
    monitor.unsubscribe("*", fn)
    monitor.instrument("commit", group_id="g", offsets={})
    assert seen == ["commit"] and not monitor.listens("commit")


def test_a_raising_subscriber_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    monitor = Monitor()
    seen: list[str] = []

    def broken(event: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    monitor.subscribe("commit", broken)
    monitor.subscribe("commit", lambda e, p: seen.append(e))
    monitor.instrument("commit", group_id="g", offsets={})
    assert seen == ["commit"]
    assert "subscriber" in caplog.text and "subscriber bug" in caplog.text


def doc_section(title: str) -> str:
    text = (ROOT / "docs" / "instrumentation.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_docs_list_exactly_the_events_of_EVENTS() -> None:
    rows = re.findall(r"^\| `([a-z_.]+)` \| (.+?) \|$", doc_section("Events"), re.M)
    assert dict(rows) == EVENTS
    assert [name for name, _ in rows] == list(EVENTS)  # same order too


def test_the_docs_list_exactly_the_metrics_kbridge_serves() -> None:
    documented = set(re.findall(r"^\| `(kbridge_[a-z_]+)` \|", doc_section("Ready-made listeners"), re.M))
    registry = PrometheusListener().registry
    served = {m.name + ("_total" if m.type == "counter" else "") for m in registry.collect()}
    assert documented == served


def test_every_event_is_emitted_somewhere_in_kbridge() -> None:
    """A named event nobody emits is a subscriber that silently never runs."""
    sources = "\n".join(
        p.read_text() for p in (ROOT / "kbridge").rglob("*.py") if "instrumentation" not in p.parts[-2:]
    )
    emitted = set(re.findall(r"(?:instrument|emit)\(\s*\"([a-z_.]+)\"", sources))  # swarm: events.emit
    missing = set(EVENTS) - emitted  # produce / produce.failed: kbridge/producer.py
    assert not missing, f"events never emitted: {sorted(missing)}"
    assert emitted <= set(EVENTS), f"emitted but not declared: {sorted(emitted - set(EVENTS))}"


# -- the listener's events, with a fake Kafka consumer -------------------------------------------------


class Record(SimpleNamespace):
    pass


def record(offset: int, payload: bytes, partition: int = 0) -> Record:
    return Record(topic="users", partition=partition, offset=offset, value=payload, key=None, headers=[],
                  timestamp=0)


class FakeKafkaConsumer:
    def __init__(self, batches: list[dict[TopicPartition, list[Record]]], highwater: int) -> None:
        self.batches = batches
        self._highwater = highwater
        self.paused: set[TopicPartition] = set()

    def poll(self, timeout_ms: int = 0, max_records: int = 0) -> dict[TopicPartition, list[Record]]:
        return self.batches.pop(0) if self.batches else {}

    def highwater(self, tp: TopicPartition) -> int:
        return self._highwater

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        pass


class FakeFuture:
    def get(self, timeout: float) -> Any:
        return SimpleNamespace(partition=0, offset=0)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, topic: str, **_: Any) -> FakeFuture:
        self.sent.append(topic)
        return FakeFuture()


class Users(BaseConsumer):
    @before_enqueue
    def keep(self) -> bool:
        return bool(self.params.payload["keep"])

    def perform(self) -> None:
        if self.params.payload.get("fail"):
            raise RuntimeError("perform failed")


@pytest.fixture
def inline_app(monkeypatch: pytest.MonkeyPatch) -> tuple[KBridge, GroupProcessor, Recorder]:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    producer = FakeProducer()
    monkeypatch.setattr(DeadLetters, "_get_producer", lambda self: producer)
    app.topic("users", consumer=Users, backend="inline", max_retries=1, retry_backoff=0.001,
              retry_backoff_max=0.001)
    recorder = Recorder(app.monitor)
    proc = GroupProcessor(Runtime.of(app), app.routes.groups["users"], threading.Event())
    return app, proc, recorder


def test_one_tick_emits_poll_fetch_filter_enqueue_perform_retry_dead_letter_and_commit(inline_app) -> None:  # type: ignore[no-untyped-def]
    app, proc, rec = inline_app
    keep, drop = b'{"keep": true}', b'{"keep": false}'
    batch = [record(0, keep), record(1, drop), record(2, b"{not json"), record(3, b'{"keep": true, "fail": true}')]
    proc.consumer = FakeKafkaConsumer([{TP: batch}], highwater=10)
    proc.tick()

    names = rec.names()
    assert names[:3] == ["poll.started", "poll.finished", "fetch"]
    assert rec.of("poll.finished")[0]["messages"] == 4
    assert rec.of("fetch") == [{"group_id": "shop_users", "topic": "users", "partition": 0, "messages": 4, "lag": 6}]
    assert rec.of("filter.rejected") == [{"group_id": "shop_users", "topic": "users", "partition": 0, "offset": 1}]
    assert [p["offset"] for p in rec.of("filter.failed")] == [2]
    # offset 0 performs; offset 3 fails, is retried once (max_retries=1), fails again and is dead-lettered
    assert [(p["offset"], p["attempt"]) for p in rec.of("perform.started")] == [(0, 1), (3, 1), (3, 2)]
    assert [p["offset"] for p in rec.of("perform.finished")] == [0]
    assert [(p["offset"], p["attempt"]) for p in rec.of("perform.failed")] == [(3, 1), (3, 2)]
    assert [(p["offset"], p["attempt"], p["messages"]) for p in rec.of("retry")] == [(3, 1, 1)]
    assert [(p["offset"], p["attempts"], p["route"]) for p in rec.of("dead_letter")] == [
        (2, 1, "shop_users/users"), (3, 2, "shop_users/users"),
    ]
    assert rec.of("enqueue")[0]["messages"] == 2 and rec.of("enqueue")[0]["seconds"] >= 0
    assert rec.of("commit") == [{"group_id": "shop_users", "offsets": {"users-0": 4}}]
    assert names.index("enqueue") < names.index("commit")


def test_nothing_is_built_for_events_nobody_listens_to(inline_app) -> None:  # type: ignore[no-untyped-def]
    app, proc, rec = inline_app
    app.monitor.unsubscribe("*", rec)

    class NoHighwater(FakeKafkaConsumer):
        def highwater(self, tp: TopicPartition) -> int:
            raise AssertionError("lag computed for a fetch event nobody listens to")

    proc.consumer = NoHighwater([{TP: [record(0, b'{"keep": true}')]}], highwater=0)
    proc.tick()
    assert proc.stats.enqueued == 1


def test_a_failed_enqueue_emits_enqueue_failed(inline_app, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    app, proc, rec = inline_app

    def down(route: Any, messages: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(proc.runtime.backend("inline"), "enqueue", down)
    proc.consumer = FakeKafkaConsumer([{TP: [record(5, b'{"keep": true}')]}], highwater=6)
    proc.tick()
    assert rec.of("enqueue.failed") == [{"group_id": "shop_users", "topic": "users", "partition": 0, "offset": 5,
                                         "error": "ConnectionError: broker down"}]
    assert rec.of("enqueue") == [] and rec.of("commit") == []


def test_rebalance_and_connect_failures_are_events(inline_app) -> None:  # type: ignore[no-untyped-def]
    from kbridge.listener.processor import _Rebalance

    app, proc, rec = inline_app
    proc.consumer = FakeKafkaConsumer([], highwater=0)
    listener = _Rebalance(proc)
    listener.on_partitions_assigned([TP])
    listener.on_partitions_revoked([TP])
    listener.on_partitions_revoked([])  # nothing held: no event
    assert rec.of("rebalance.assigned") == [{"group_id": "shop_users", "partitions": [("users", 0)]}]
    assert rec.of("rebalance.revoked") == [{"group_id": "shop_users", "partitions": [("users", 0)]}]


def test_the_server_emits_lifecycle_and_signal_events() -> None:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    rec = Recorder(app.monitor)
    server = listener_process(app, [])
    server.stop.set()
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(server.run()))  # off the main thread: no signal handlers
    runner.start()
    runner.join(30)
    assert codes == [0]
    server._signals = 0
    server._on_signal(15, None)
    assert rec.names() == ["app.started", "app.stopping", "app.stopped", "signal.received"]
    assert rec.of("app.stopped") == [{"process": "listener", "client_id": "shop", "exit_code": 0}]
    assert rec.of("signal.received") == [{"signal": "SIGTERM"}]


class FakeWorker:
    """What Celery's worker signals send: an object with .app (hashable, unlike SimpleNamespace)."""

    def __init__(self, app: Any) -> None:
        self.app = app


def test_a_worker_emits_perform_retry_and_lifecycle_events() -> None:
    """The Celery task itself, run eagerly: perform.failed then retry; and worker_init / shutdown signals."""
    from celery import Celery
    from celery.signals import worker_init, worker_shutdown

    celery_app = Celery("unit", broker="memory://")
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, celery=celery_app)

    class Flaky(BaseConsumer):
        def perform(self) -> None:
            raise RuntimeError("flaky")

    app.topic("users", consumer=Flaky, max_retries=3)
    rec = Recorder(app.monitor)
    fake_worker = FakeWorker(celery_app)
    worker_init.send(sender=fake_worker)
    worker_init.send(sender=FakeWorker(Celery("another")))  # another app's worker: ignored
    from kbridge.interchange import to_wire
    from kbridge.params import Params

    message = to_wire(Params(topic="users", partition=2, offset=7, raw_payload=b"{}"))
    with pytest.raises(Exception):  # noqa: B017 - Celery's Retry (or the error itself, eagerly)
        app.perform_task.apply(args=["shop_users/users", [message]], throw=True)
    worker_shutdown.send(sender=fake_worker)
    assert rec.names() == ["app.started", "perform.started", "perform.failed", "retry", "app.stopped"]
    assert rec.of("perform.failed")[0]["error"] == "RuntimeError: flaky"
    assert rec.of("retry")[0] | {"countdown": 0} == {
        "route": "shop_users/users", "group_id": "shop_users", "topic": "users", "partition": 2, "offset": 7,
        "messages": 1, "attempt": 1, "countdown": 0,
    }
    assert rec.of("app.started") == [{"process": "worker", "client_id": "shop"}]


# -- Prometheus -----------------------------------------------------------------------------------------


def sample(registry: Any, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def test_prometheus_counts_messages_per_group_and_topic() -> None:
    monitor = Monitor()
    metrics = PrometheusListener().attach(monitor)
    where = {"group_id": "g", "topic": "t"}
    monitor.instrument("fetch", **where, partition=0, messages=5, lag=3)
    monitor.instrument("filter.rejected", **where, partition=0, offset=1)
    monitor.instrument("enqueue", **where, partition=0, messages=4, seconds=0.01)
    perform = {"route": "g/t", **where, "partition": 0, "offset": 0}
    monitor.instrument("perform.finished", **perform, messages=3, attempt=1, seconds=0.2)
    monitor.instrument("perform.failed", **perform, messages=1, attempt=1, seconds=0.1, error="E: x")
    monitor.instrument("retry", **perform, messages=1, attempt=1, countdown=1.0)
    monitor.instrument("dead_letter", **perform, dead_letter_topic="t.dlq", error="E: x", attempts=2)
    reg = metrics.registry
    counts = {n: sample(reg, f"kbridge_{n}_total", **where) for n in
              ("fetched", "filtered", "enqueued", "performed", "failed", "retried", "dead_lettered")}
    assert counts == {"fetched": 5, "filtered": 1, "enqueued": 4, "performed": 3, "failed": 1, "retried": 1,
                      "dead_lettered": 1}
    assert sample(reg, "kbridge_enqueue_seconds_count", **where) == 1
    assert sample(reg, "kbridge_perform_seconds_count", **where) == 2
    assert sample(reg, "kbridge_consumer_lag", **where, partition="0") == 3

    monitor.instrument("rebalance.revoked", group_id="g", partitions=[("t", 0), ("t", 9)])
    assert sample(reg, "kbridge_consumer_lag", **where, partition="0") is None  # another listener reports it now


def test_prometheus_listeners_of_two_apps_do_not_collide() -> None:
    a, b = PrometheusListener(), PrometheusListener()
    assert a.registry is not b.registry


# -- health -----------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_fails_once_a_group_loop_stops_turning() -> None:
    clock = Clock()
    monitor = Monitor()
    tracker = HealthTracker(["a", "b"], liveness_timeout=30, clock=clock).attach(monitor)
    assert tracker.liveness()[0]
    clock.now += 20
    monitor.instrument("poll.finished", group_id="a", messages=0, seconds=0.5)
    monitor.instrument("connect.failed", group_id="b", attempts=3, delay=4.0, error="no broker")  # waiting is alive
    clock.now += 20
    assert tracker.liveness()[0]
    monitor.instrument("poll.started", group_id="a")
    clock.now += 15  # b last turned 35 s ago
    ok, body = tracker.liveness()
    assert not ok and body["stuck"] == ["b"] and body["seconds_since_loop_turned"]["a"] == 15


def test_readiness_follows_assignment_rebalance_and_stopping() -> None:
    monitor = Monitor()
    tracker = HealthTracker(["a", "b"], liveness_timeout=30).attach(monitor)
    assert tracker.readiness()[1]["waiting_for_assignment"] == ["a", "b"]
    monitor.instrument("rebalance.assigned", group_id="a", partitions=[("t", 1), ("t", 0)])
    monitor.instrument("rebalance.assigned", group_id="b", partitions=[])  # a standby member is ready
    ok, body = tracker.readiness()
    assert ok and body["partitions"] == {"a": ["t-0", "t-1"], "b": []}
    monitor.instrument("rebalance.revoked", group_id="a", partitions=[("t", 0), ("t", 1)])
    assert tracker.readiness()[1]["waiting_for_assignment"] == ["a"]
    monitor.instrument("rebalance.assigned", group_id="a", partitions=[("t", 0)])
    assert tracker.readiness()[0]
    monitor.instrument("app.stopping", process="listener", client_id="shop")
    assert tracker.readiness()[1]["stopping"] is True and not tracker.readiness()[0]


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health_server_answers_probes_over_http() -> None:
    monitor = Monitor()
    tracker = HealthTracker(["a"], liveness_timeout=30).attach(monitor)
    server = HealthServer(tracker, 0, "127.0.0.1").start()
    try:
        assert get(server.port, "/live")[0] == 200
        status, body = get(server.port, "/ready")
        assert status == 503 and body["waiting_for_assignment"] == ["a"]
        monitor.instrument("rebalance.assigned", group_id="a", partitions=[("t", 0)])
        assert get(server.port, "/ready") == (200, {"partitions": {"a": ["t-0"]}, "ready": True, "stopping": False,
                                                    "waiting_for_assignment": []})
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.close()


# -- logging and process title ------------------------------------------------------------------------------


def test_logging_writes_one_info_line_per_enqueued_batch(caplog: pytest.LogCaptureFixture) -> None:
    monitor = Monitor()
    logger = logging.getLogger("kbridge.events.test")
    logger.setLevel(logging.INFO)
    LoggingListener(logger).attach(monitor)
    assert not monitor.listens("fetch") and not monitor.listens("filter.rejected")  # DEBUG: not subscribed
    with caplog.at_level(logging.INFO, logger="kbridge.events.test"):
        monitor.instrument("enqueue", group_id="shop_users", topic="users", partition=3, messages=212, seconds=0.0041)
    assert [r.getMessage() for r in caplog.records] == ["shop_users: enqueued 212 message(s) of users-3 in 4.1ms"]


def test_proctitle_shows_client_id_state_and_counters() -> None:
    clock = Clock()
    titles: list[str] = []
    monitor = Monitor()
    ProctitleListener("shop", setter=titles.append, clock=clock).attach(monitor)
    assert titles[-1].startswith("kbridge listener shop: starting fetched=0")
    monitor.instrument("connect.failed", group_id="g", attempts=1, delay=1.0, error="x")
    assert "waiting for Kafka" in titles[-1]
    monitor.instrument("rebalance.assigned", group_id="g", partitions=[("t", 0)])
    monitor.instrument("fetch", group_id="g", topic="t", partition=0, messages=10, lag=4)
    monitor.instrument("enqueue", group_id="g", topic="t", partition=0, messages=9, seconds=0.01)
    assert titles[-1].endswith(": running fetched=0 filtered=0 enqueued=0 dead_lettered=0 lag=0")  # throttled
    clock.now += 1.5
    monitor.instrument("poll.finished", group_id="g", messages=0, seconds=0.5)
    assert titles[-1] == "kbridge listener shop: running fetched=10 filtered=0 enqueued=9 dead_lettered=0 lag=4"
    monitor.instrument("enqueue.failed", group_id="g", topic="t", partition=0, offset=10, error="down")
    assert ": holding 1 partition(s) " in titles[-1]


def test_proctitle_without_setproctitle_subscribes_to_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from kbridge.instrumentation import proctitle

    monkeypatch.setattr(proctitle, "default_setter", lambda: None)
    monitor = Monitor()
    ProctitleListener("shop").attach(monitor)
    assert not any(monitor.listens(e) for e in EVENTS)


# -- settings, CLI and lag ---------------------------------------------------------------------------------


def test_ports_are_validated_with_every_other_problem() -> None:
    with pytest.raises(ConfigError) as info:
        KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, metrics_port=0, health_port="8080",
                liveness_timeout=0)
    text = str(info.value)
    assert "metrics_port must be a TCP port number (1-65535) or None, got 0" in text
    assert "health_port must be a TCP port number (1-65535) or None, got '8080'" in text
    assert "liveness_timeout must be a number of seconds > 0" in text
    with pytest.raises(ConfigError, match="metrics_port and health_port must differ"):
        KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, metrics_port=9100, health_port=9100)


@pytest.mark.parametrize("command", [["lag"], ["listen"], ["worker"]])
def test_cli_documents_the_instrumentation_options(command: list[str]) -> None:
    out = CliRunner().invoke(kbridge_cli, [*command, "--help"]).output
    assert "--app" in out
    if command != ["lag"]:
        assert "--metrics-port" in out
    if command == ["listen"]:
        assert "--health-port" in out and "--no-log-batches" in out


def test_lag_arithmetic() -> None:
    assert PartitionLag("g", "t", 0, committed=10, end=14).lag == 4
    assert PartitionLag("g", "t", 0, committed=None, end=14, start=2).lag == 12  # will read from the start
    assert PartitionLag("g", "t", 0, committed=None, end=14, start_from_beginning=False).lag == 0
    assert PartitionLag("g", "t", 0, committed=3, end=None).lag is None
    assert PartitionLag("g", "t", 0, 3, 5, end_source=LIST_OFFSETS).end_source == "ListOffsets"
