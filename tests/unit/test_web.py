"""kbridge web without Kafka: commands, the pause step, the report store and the HTTP guard."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition

from kbridge import BaseConsumer, KBridge
from kbridge.listener.controls import PAUSED_REASON, Controls, command_problem
from kbridge.listener.steps.pause import PauseStep
from kbridge.listener.steps.step import Hold, PartitionBatch, Step
from kbridge.params import Params
from kbridge.web.state import ReportStore

starlette_testclient = pytest.importorskip("starlette.testclient", reason="the web extra is not installed")

TOKEN = "t" * 24


class Noop(BaseConsumer):
    def perform(self) -> None: ...


def _app(**settings: Any) -> KBridge:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "127.0.0.1:1"}, **settings)
    app.topic("orders", consumer=Noop, backend="inline")
    return app


def _command(action: str, partition: int | None = 0, **extra: Any) -> dict[str, Any]:
    return {"id": f"{action}-{partition}", "action": action, "group_id": "shop_orders", "topic": "orders",
            "partition": partition, **extra}


def test_controls_pause_and_resume_partitions_and_whole_topics() -> None:
    controls = Controls()
    assert not controls.is_paused("shop_orders", "orders", 0)
    assert controls.apply(_command("pause", 0))
    assert controls.is_paused("shop_orders", "orders", 0) and not controls.is_paused("shop_orders", "orders", 1)
    assert controls.apply(_command("pause", None))
    assert controls.is_paused("shop_orders", "orders", 7)
    assert controls.apply(_command("resume", 3))  # resuming one partition of a paused topic resumes the topic
    assert not controls.is_paused("shop_orders", "orders", 0)
    assert controls.take_acks() == ["pause-0", "pause-None", "resume-3"]
    assert controls.take_acks() == []


@pytest.mark.parametrize("bad", [
    None, [], {"action": "stop"}, _command("pause", -1), _command("pause", True), {**_command("pause"), "id": ""},
    {**_command("pause"), "topic": 5},
])
def test_malformed_commands_are_refused_whole(bad: Any) -> None:
    controls = Controls()
    assert command_problem(bad) is not None
    assert not controls.apply(bad)
    assert controls.snapshot() == [] and controls.take_acks() == []


class Record(Step):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def submit(self, batch: PartitionBatch) -> None:
        self.seen.extend(m.offset for m in batch.messages)


def test_pause_step_holds_the_whole_batch_until_resumed() -> None:
    controls = Controls()
    step, tail = PauseStep("shop_orders", controls.is_paused), Record()
    step.next = tail
    route = _app().routes.groups["orders"].topics["orders"]
    messages = [Params(topic="orders", partition=0, offset=o, raw_payload=b"{}") for o in (5, 6)]
    batch = PartitionBatch(TopicPartition("orders", 0), route, messages, 5, 6)
    controls.apply(_command("pause", 0))
    with pytest.raises(Hold) as held:
        step.submit(batch)
    assert held.value.reason == PAUSED_REASON and tail.seen == []
    assert [m.offset for m in held.value.pending[0].batch.messages] == [5, 6]
    controls.apply(_command("resume", 0))
    step.submit(held.value.pending[0].batch)
    assert tail.seen == [5, 6]


def _report(id: str, at: float, lag: int, fetched: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "listener", "id": id, "at": at, "groups": [{
        "group_id": "g", "counters": {"fetched": fetched},
        "partitions": [{"topic": "t", "partition": 0, "committed": 10, "highwater": 10 + lag, "lag": lag,
                        "state": "flowing", "reason": None}]}], **extra}


def test_store_shows_a_silent_or_stopped_listener_as_gone() -> None:
    store = ReportStore(timeout=6.0)
    store.add(_report("a", 100.0, 0, 0), now=100.0)
    store.add(_report("b", 100.0, 0, 0), now=100.0)
    assert [row["alive"] for row in store.listeners(now=105.0)] == [True, True]
    store.add(_report("b", 105.0, 0, 0, stopped=True), now=105.0)
    assert [row["alive"] for row in store.listeners(now=105.0)] == [True, False]
    assert [row["alive"] for row in store.listeners(now=106.5)] == [False, False]
    assert store.overview(now=106.5)["listeners_gone"] == 2


def test_store_charts_lag_and_throughput_and_forgets_the_hour_before() -> None:
    store = ReportStore(timeout=6.0, history=3600.0)
    store.add(_report("a", 10.0, 99, 0), now=3700.0)  # older than an hour: dropped
    for i, (lag, fetched) in enumerate([(50, 0), (20, 300), (0, 500)]):
        store.add(_report("a", 3600.0 + 5 * i, lag, fetched), now=3600.0 + 5 * i)
    chart = store.chart("g", now=3615.0, bucket=5.0)
    assert [lag for _, lag in chart["lag"]["t-0"]] == [50, 20, 0]
    assert [rate for _, rate in chart["throughput"]] == [60.0, 40.0]
    assert store.add("not a report") is None and store.add({"kind": "listener", "at": "x"}) is None


def test_store_lists_failures_newest_first_by_route() -> None:
    store = ReportStore(timeout=6.0)
    for i, route in enumerate(["g/a", "g/b", "g/a"]):
        store.add({"kind": "failure", "at": 1000.0 + i, "route": route, "offset": i}, now=1001.0)
    assert [f["offset"] for f in store.failures("g/a")] == [2, 0]
    assert len(store.failures()) == 3


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    from kbridge.web import create_app

    monkeypatch.setenv("KBRIDGE_WEB_TOKEN", TOKEN)
    with starlette_testclient.TestClient(create_app(_app(), read_reports=False), base_url="http://127.0.0.1") as c:
        yield c


def test_without_the_token_pages_redirect_and_the_api_refuses(client: Any) -> None:
    assert client.get("/api/overview").status_code == 401
    page = client.get("/groups", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert client.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    ok = client.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["client_id"] == "shop"
    assert ok.headers["x-frame-options"] == "DENY" and "default-src 'self'" in ok.headers["content-security-policy"]


def test_login_sets_a_session_that_is_not_the_token_and_posts_need_csrf(client: Any) -> None:
    csrf = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
    refused = client.post("/login", content=f"token=wrong&csrf={csrf}",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 403 and TOKEN not in refused.text
    client.post("/login", content=f"token={TOKEN}&csrf={csrf}", follow_redirects=False,
                headers={"content-type": "application/x-www-form-urlencoded"})
    session = client.cookies.get("kbridge_session")
    assert session and TOKEN not in session
    assert client.get("/api/routes").json()[0]["topic"] == "orders"
    body = {"group_id": "shop_orders", "topic": "orders", "partition": 0}
    assert client.post("/api/pause", json=body).status_code == 403  # the cookie alone is not enough
    assert client.get("/api/pause").status_code == 405  # state changes are POST only
    wrong = client.post("/api/pause", json={**body, "topic": "payments"}, headers={"X-CSRF-Token": csrf})
    assert wrong.status_code == 400 and "not routed" in wrong.json()["error"]
    not_dlq = client.get("/api/dead-letters/__consumer_offsets")
    assert not_dlq.status_code == 404


def test_non_ascii_credentials_are_refused_not_an_error(client: Any) -> None:
    assert client.get("/api/overview", headers={"Authorization": "Bearer tökén".encode("latin-1")}).status_code == 401
    assert client.get("/api/overview", headers={"Cookie": "kbridge_session=ünï".encode("latin-1")}).status_code == 401
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/overview", headers=ok).status_code == 200
    csrf = client.get("/api/csrf", headers=ok).json()["csrf"]
    client.post("/login", content=f"token={TOKEN}&csrf={csrf}",
                headers={"content-type": "application/x-www-form-urlencoded"})
    refused = client.post("/api/pause", json={}, headers={"X-CSRF-Token": "é".encode("latin-1")})
    assert refused.status_code == 403
    login = client.post("/login", content="token=%C3%A9&csrf=%C3%A9",
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert login.status_code == 403


def test_a_foreign_host_header_is_refused_on_loopback(client: Any) -> None:
    assert client.get("/login", headers={"Host": "attacker.example"}).status_code == 400


def test_a_short_token_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from kbridge.errors import KBridgeError
    from kbridge.web import create_app

    monkeypatch.setenv("KBRIDGE_WEB_TOKEN", "short-secret")
    with pytest.raises(KBridgeError) as refused:
        create_app(_app(), read_reports=False)
    assert "short-secret" not in str(refused.value)


def test_listener_report_shows_partitions_states_errors_and_acks() -> None:
    import threading

    from kbridge.listener.processor import GroupProcessor
    from kbridge.reports import ListenerReporter
    from kbridge.runtime import Runtime

    app = _app(web_reports=True)
    before = {event: len(app.monitor._subscribers[event]) for event in ("rebalance.assigned", "enqueue.failed")}
    controls = Controls()
    processor = GroupProcessor(Runtime.of(app), app.routes.groups["orders"], threading.Event(), controls.is_paused)
    reporter = ListenerReporter(app.settings, [processor], controls, app.monitor)
    app.monitor.instrument("rebalance.assigned", group_id="shop_orders", partitions=[("orders", 0), ("orders", 1)])
    processor.stats.committed_offsets["orders-0"] = 40
    reporter._highwater[TopicPartition("orders", 0)] = 100
    reporter._earliest[TopicPartition("orders", 1)] = 5
    reporter._highwater[TopicPartition("orders", 1)] = 8
    controls.apply(_command("pause", 1))
    app.monitor.instrument("partition.held", group_id="shop_orders", topic="orders", partition=1, offset=5,
                           reason=PAUSED_REASON)
    app.monitor.instrument("enqueue.failed", group_id="shop_orders", topic="orders", partition=0, offset=40,
                           error="ConnectionError: broker down")
    report = reporter.report()
    parts = {p["partition"]: p for p in report["groups"][0]["partitions"]}
    assert parts[0] | {"reason": None} == {"topic": "orders", "partition": 0, "committed": 40, "highwater": 100,
                                         "lag": 60, "state": "flowing", "reason": None}
    assert parts[1]["state"] == "paused" and parts[1]["committed"] is None and parts[1]["lag"] == 3
    assert [e["event"] for e in report["errors"]] == ["enqueue.failed"]  # an operator's pause is no error
    assert report["acked"] == ["pause-1"] and reporter.report()["acked"] == []
    app.monitor.instrument("rebalance.revoked", group_id="shop_orders", partitions=[("orders", 0)])
    assert [p["partition"] for p in reporter.report()["groups"][0]["partitions"]] == [1]
    reporter.close()
    assert {event: len(app.monitor._subscribers[event]) for event in before} == before


def test_the_pause_step_is_in_the_chain_only_with_web_reports() -> None:
    from kbridge.listener.offsets import OffsetTracker
    from kbridge.listener.processor import Stats
    from kbridge.listener.steps import StepContext, build_chain
    from kbridge.runtime import Runtime

    app = _app()
    group = app.routes.groups["orders"]

    def steps(paused: Any) -> list[str]:
        context = StepContext(group.id, Runtime.of(app), Stats(), OffsetTracker(), paused=paused)
        route = group.topics["orders"]
        step, names = build_chain(context, lambda name: route).head.entry(route), []
        while step is not None:
            names.append(type(step).__name__)
            step = step.next
        return names

    assert "PauseStep" not in steps(None)
    assert steps(Controls().is_paused)[0] == "PauseStep"


def test_a_pattern_routes_topics_can_be_paused_and_other_topics_cannot() -> None:
    from kbridge.errors import KBridgeError
    from kbridge.web.commands import build

    app = _app()
    with app.consumer_group("tenants") as group:
        group.pattern("tenants", r"tenant\.[a-z]+", consumer=Noop, backend="inline")
    command = build(app, "pause", {"group_id": "shop_tenants", "topic": "tenant.acme", "partition": 0})
    assert command["topic"] == "tenant.acme" and command["action"] == "pause"
    with pytest.raises(KBridgeError, match="is not routed in shop_tenants"):
        build(app, "pause", {"group_id": "shop_tenants", "topic": "orders", "partition": 0})
