"""The health server and the metrics server: where they listen, idle connections, and Kafka outages in /ready."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from click.testing import CliRunner

from kbridge import BaseConsumer, KBridge
from kbridge.cli import main as kbridge_cli
from kbridge.instrumentation import Monitor
from kbridge.instrumentation.health import IDLE_TIMEOUT, HealthServer, HealthTracker
from kbridge.instrumentation.wiring import instrument_listener


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assigned_tracker(clock: Clock, monitor: Monitor) -> HealthTracker:
    tracker = HealthTracker(["shop_a", "shop_b"], liveness_timeout=30, clock=clock).attach(monitor)
    monitor.instrument("rebalance.assigned", group_id="shop_a", partitions=[("t", 0)])
    monitor.instrument("rebalance.assigned", group_id="shop_b", partitions=[("u", 0)])
    return tracker


# -- /ready follows kafka.lost and kafka.restored ---------------------------------------------------------


def test_ready_is_503_with_the_reason_while_any_group_has_lost_kafka() -> None:
    clock, monitor = Clock(), Monitor()
    tracker = assigned_tracker(clock, monitor)
    assert tracker.readiness()[0]

    monitor.instrument("kafka.lost", group_id="shop_a", error="NoBrokersAvailable: 127.0.0.1:9092")
    clock.now += 5
    ok, body = tracker.readiness()
    assert not ok
    assert body["kafka_lost"] == {"shop_a": "NoBrokersAvailable: 127.0.0.1:9092"}
    assert body["reason"] == "consumer group shop_a lost its Kafka brokers: NoBrokersAvailable: 127.0.0.1:9092"
    assert body["partitions"] == {"shop_a": ["t-0"], "shop_b": ["u-0"]}  # the assignment is still known

    monitor.instrument("kafka.lost", group_id="shop_b", error="KafkaConnectionError")
    monitor.instrument("kafka.restored", group_id="shop_a")
    clock.now += 5
    ok, body = tracker.readiness()
    assert not ok and body["kafka_lost"] == {"shop_b": "KafkaConnectionError"}  # one group still out

    monitor.instrument("kafka.restored", group_id="shop_b")
    ok, body = tracker.readiness()
    assert ok and "reason" not in body and "kafka_lost" not in body


def test_a_kafka_outage_does_not_fail_liveness() -> None:
    """Waiting out an outage is working as designed: a restart would not bring Kafka back."""
    clock, monitor = Clock(), Monitor()
    tracker = assigned_tracker(clock, monitor)
    monitor.instrument("kafka.lost", group_id="shop_a", error="down")
    for _ in range(10):
        clock.now += 10
        monitor.instrument("connect.failed", group_id="shop_a", attempts=1, delay=1.0, error="down")
        monitor.instrument("poll.finished", group_id="shop_b", messages=0, seconds=0.1)
    assert tracker.liveness()[0] and not tracker.readiness()[0]


def test_kafka_events_of_other_groups_are_ignored() -> None:
    clock, monitor = Clock(), Monitor()
    tracker = assigned_tracker(clock, monitor)
    monitor.instrument("kafka.lost", group_id="not_ours", error="down")
    assert tracker.readiness()[0]


def test_every_reason_is_given_at_once() -> None:
    monitor = Monitor()
    tracker = HealthTracker(["shop_a", "shop_b"], liveness_timeout=30).attach(monitor)
    monitor.instrument("rebalance.assigned", group_id="shop_a", partitions=[])
    monitor.instrument("kafka.lost", group_id="shop_a", error="down")
    monitor.instrument("app.stopping", process="listener", client_id="shop")
    ok, body = tracker.readiness()
    assert not ok
    assert body["reason"] == ("the listener is stopping; consumer group shop_a lost its Kafka brokers: down; "
                              "waiting for a partition assignment: shop_b")


def test_ready_answers_503_over_http_during_an_outage_and_200_after() -> None:
    clock, monitor = Clock(), Monitor()
    server = HealthServer(assigned_tracker(clock, monitor), 0, "127.0.0.1").start()
    try:
        assert get(server.port, "/ready")[0] == 200
        monitor.instrument("kafka.lost", group_id="shop_b", error="NoBrokersAvailable")
        status, body = get(server.port, "/ready")
        assert status == 503 and "shop_b lost its Kafka brokers: NoBrokersAvailable" in body["reason"]
        assert get(server.port, "/live")[0] == 200
        monitor.instrument("kafka.restored", group_id="shop_b")
        assert get(server.port, "/ready")[0] == 200
    finally:
        server.close()


# -- idle connections ------------------------------------------------------------------------------------


def handler_threads() -> int:
    """Request threads of the server; ThreadingMixIn names them "Thread-N (process_request_thread)"."""
    return sum(1 for t in threading.enumerate() if "process_request_thread" in t.name)


def test_an_idle_connection_is_closed_and_its_thread_ends() -> None:
    assert 1 <= IDLE_TIMEOUT <= 10  # a few seconds: longer than any probe, shorter than a leak that matters
    monitor = Monitor()
    server = HealthServer(HealthTracker(["a"], 30).attach(monitor), 0, "127.0.0.1", idle_timeout=0.5).start()
    try:
        before = handler_threads()
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            deadline = time.monotonic() + 5
            while handler_threads() < before + 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert handler_threads() == before + 3  # one thread per connection, each waiting for a request
            started = time.monotonic()
            for conn in idle:
                conn.settimeout(5)
                assert conn.recv(1024) == b""  # the server closed it, having received nothing
            assert time.monotonic() - started < 3
        finally:
            for conn in idle:
                conn.close()
        deadline = time.monotonic() + 5
        while handler_threads() > before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handler_threads() == before
        assert get(server.port, "/live")[0] == 200  # and it still answers probes
    finally:
        server.close()


def test_a_connection_that_sends_half_a_request_is_closed_too() -> None:
    monitor = Monitor()
    server = HealthServer(HealthTracker(["a"], 30).attach(monitor), 0, "127.0.0.1", idle_timeout=0.5).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as conn:
            conn.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n")  # no blank line: the request never ends
            conn.settimeout(5)
            started = time.monotonic()
            while conn.recv(1024):
                pass
            assert time.monotonic() - started < 3
    finally:
        server.close()


# -- where the servers listen ------------------------------------------------------------------------------


class Orders(BaseConsumer):
    def perform(self) -> None:
        pass


def app_with(**settings: Any) -> KBridge:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, **settings)
    app.topic("orders", consumer=Orders)
    return app


def test_listener_servers_listen_on_127_0_0_1_by_default() -> None:
    served = instrument_listener(app_with(), ["shop_orders"], metrics_port=0, health_port=0, proctitle=False,
                                 log_batches=False)
    try:
        assert served.health is not None and served.metrics is not None
        for server in (served.health, served.metrics):
            assert server._httpd.server_address[0] == "127.0.0.1"  # type: ignore[attr-defined]
        assert get(served.health.port, "/live")[0] == 200
    finally:
        served.close()


def test_listener_servers_listen_where_the_settings_or_the_arguments_say() -> None:
    app = app_with(metrics_host="0.0.0.0", health_host="localhost")
    served = instrument_listener(app, ["shop_orders"], metrics_port=0, health_port=0, proctitle=False,
                                 log_batches=False)
    try:
        assert served.metrics._httpd.server_address[0] == "0.0.0.0"  # type: ignore[union-attr]
        assert served.health._httpd.server_address[0] == "127.0.0.1"  # type: ignore[union-attr] # localhost
    finally:
        served.close()
    served = instrument_listener(app, ["shop_orders"], metrics_port=0, health_port=0, metrics_host="127.0.0.1",
                                 health_host="0.0.0.0", proctitle=False, log_batches=False)
    try:
        assert served.metrics._httpd.server_address[0] == "127.0.0.1"  # type: ignore[union-attr]
        assert served.health._httpd.server_address[0] == "0.0.0.0"  # type: ignore[union-attr]
    finally:
        served.close()


def test_the_health_server_listens_on_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = HealthServer(HealthTracker(["a"], 30), 0, "::1").start()
    except Exception as exc:  # a host without an IPv6 loopback
        pytest.skip(f"cannot bind ::1: {exc}")
    try:
        assert get(server.port, "/live", host="[::1]")[0] == 200
    finally:
        server.close()


@pytest.mark.parametrize(("command", "options"), [
    (["listen"], ["--metrics-host", "--health-host"]),
    (["worker"], ["--metrics-host"]),
])
def test_cli_has_host_options(command: list[str], options: list[str]) -> None:
    out = CliRunner().invoke(kbridge_cli, [*command, "--help"]).output
    for option in options:
        assert option in out


def test_cli_refuses_a_bad_host() -> None:
    result = CliRunner().invoke(kbridge_cli, ["listen", "--app", "x:y", "--health-host", "not a host"])
    assert result.exit_code == 2
    assert "Invalid value for '--health-host': 'not a host' is not an IP address or a host name" in result.output


def test_cli_passes_the_hosts_to_the_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    import kbridge.instrumentation.wiring as wiring
    import kbridge.listener as listener

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_instrument(app: KBridge, group_ids: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(wiring, "instrument_listener", fake_instrument)
    monkeypatch.setattr(listener, "ListenerProcess", object)
    app = app_with(health_port=9000)
    result = CliRunner().invoke(kbridge_cli, ["listen", "--metrics-host", "0.0.0.0", "--health-host", "::"], obj=app)
    assert isinstance(result.exception, Stop)
    assert seen["metrics_host"] == "0.0.0.0" and seen["health_host"] == "::" and seen["health_port"] == 9000
    result = CliRunner().invoke(kbridge_cli, ["listen"], obj=app, env={"KBRIDGE_HEALTH_HOST": "0.0.0.0"})
    assert isinstance(result.exception, Stop)
    assert seen["metrics_host"] is None and seen["health_host"] == "0.0.0.0"  # None: the settings decide


def test_the_metrics_server_closes_idle_connections_too() -> None:
    from prometheus_client import CollectorRegistry

    from kbridge.instrumentation.prometheus import serve

    server = serve(CollectorRegistry(), 0, "127.0.0.1", idle_timeout=0.5)
    try:
        before = handler_threads()
        with socket.create_connection(("127.0.0.1", server.port)) as conn:
            conn.settimeout(5)
            started = time.monotonic()
            assert conn.recv(1024) == b""  # closed by the server, having received nothing
            assert time.monotonic() - started < 3
        deadline = time.monotonic() + 5
        while handler_threads() > before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handler_threads() == before
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as reply:
            assert reply.status == 200  # and it still serves scrapes
    finally:
        server.close()
