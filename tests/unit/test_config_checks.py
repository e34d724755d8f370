"""Configuration problems are all reported at once: a topic() call's, kafka-python settings' types, hosts."""

from __future__ import annotations

from typing import Any

import pytest

from kbridge import BaseConsumer, KBridge
from kbridge.config import DEFAULT_HOST, Settings, kafka_type_problem
from kbridge.errors import ConfigError


class Orders(BaseConsumer):
    def perform(self) -> None:
        pass


def inline_app() -> KBridge:
    return KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})


SEVEN_BAD_OPTIONS: dict[str, Any] = dict(
    backend="sidekiq", batch_consuming="yes", queue="", timeout=-1, max_retries=-2, dead_letter_topic="a b",
)


def assert_all_seven(problems: list[str], name_needle: str) -> None:
    needles = [name_needle, "backend 'sidekiq' is unknown", "batch_consuming must be True or False",
               "queue must be a non-empty string", "timeout must be a number of seconds > 0",
               "max_retries must be an integer >= 0", "dead_letter_topic 'a b' is invalid"]
    assert len(problems) == 7, problems
    for needle in needles:
        assert sum(needle in p for p in problems) == 1, (needle, problems)


# -- every problem of one topic() call ------------------------------------------------------------------


def test_the_topic_shorthand_reports_an_illegal_name_with_every_other_problem() -> None:
    app = inline_app()
    with pytest.raises(ConfigError) as info:
        app.topic("orders!", consumer=Orders, **SEVEN_BAD_OPTIONS)
    assert_all_seven(info.value.problems, "topic name 'orders!' is invalid")
    assert "7 problem(s)" in str(info.value)
    assert not app.routes.groups and len(app.routes) == 0  # nothing half-registered


def test_the_topic_shorthand_reports_a_second_declaration_with_every_other_problem() -> None:
    app = inline_app()
    app.topic("orders", consumer=Orders)
    with pytest.raises(ConfigError) as info:
        app.topic("orders", consumer=Orders, **SEVEN_BAD_OPTIONS)
    assert_all_seven(info.value.problems, "consumer group 'orders' is declared twice")
    assert [r.route_id for r in app.routes] == ["shop_orders/orders"]  # the first one is kept as it was


def test_a_group_reports_a_topic_routed_twice_with_every_other_problem() -> None:
    group = inline_app().consumer_group("g")
    group.topic("orders", consumer=Orders)
    with pytest.raises(ConfigError) as info:
        group.topic("orders", consumer=Orders, **SEVEN_BAD_OPTIONS)
    assert_all_seven(info.value.problems, "topic 'orders' is routed twice in consumer group 'g'")


def test_a_group_reports_an_illegal_topic_name_with_every_other_problem() -> None:
    with pytest.raises(ConfigError) as info:
        inline_app().consumer_group("g").topic("a/b", consumer=Orders, **SEVEN_BAD_OPTIONS)
    assert_all_seven(info.value.problems, "topic name 'a/b' is invalid")


def test_a_valid_shorthand_still_registers_its_group_and_route() -> None:
    app = inline_app()
    route = app.topic("orders", consumer=Orders, timeout=5)
    assert list(app.routes.groups) == ["orders"] and app.routes.find("shop_orders/orders") is route


# -- kafka-python settings, type-checked against kafka-python's defaults ------------------------------


def test_kafka_settings_of_the_wrong_type_are_all_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.build({"client_id": "shop", "kafka": {
            "bootstrap_servers": "x:1",
            "session_timeout_ms": "six",
            "heartbeat_interval_ms": True,  # a bool is not an int here
            "check_crcs": "yes",
            "security_protocol": 1,
            "acks": "1",
            "retries": "many",
            "socket_options": 5,
            "kafka_client": "x",
        }, "shutdown_timeout": 0})
    problems = info.value.problems
    expected = [
        "kafka['session_timeout_ms'] must be an int (kafka-python's default is 45000), got str 'six'",
        "kafka['heartbeat_interval_ms'] must be an int (kafka-python's default is 3000), got bool True",
        "kafka['check_crcs'] must be True or False (kafka-python's default is True), got str 'yes'",
        "kafka['security_protocol'] must be a str (kafka-python's default is 'PLAINTEXT'), got int 1",
        "kafka['acks'] must be 0, 1, -1 or 'all' (kafka-python's default is -1), got str '1'",
        "kafka['retries'] must be a number (int or float) (kafka-python's default is inf), got str 'many'",
        "kafka['socket_options'] must be a list or tuple (kafka-python's default is [(6, 1, 1)]), got int 5",
        "kafka['kafka_client'] must be a callable (a function or a class), got str 'x'",
    ]
    for line in expected:
        assert line in problems, (line, problems)
    assert any(p.startswith("shutdown_timeout must be") for p in problems)  # with the other settings' problems
    assert len(problems) == len(expected) + 1, problems


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("session_timeout_ms", 6000), ("retries", 5), ("retries", 2.5), ("consumer_timeout_ms", 1000),
        ("acks", "all"), ("acks", 0), ("acks", 1), ("acks", -1), ("bootstrap_servers", ["a:1", "b:2"]),
        ("bootstrap_servers", "a:1,b:2"), ("check_crcs", False), ("client_rack", ""),
        ("metric_reporters", ()), ("partition_assignment_strategy", [object]),
        # None-defaulted settings take anything kafka-python makes sense of
        ("api_version", (2, 8)), ("api_version", "2.8"), ("ssl_cafile", "/etc/ca.pem"), ("sasl_mechanism", "PLAIN"),
        ("receive_buffer_bytes", 65536), ("group_instance_id", "pod-1"), ("compression_type", "gzip"),
    ],
)
def test_kafka_settings_of_the_right_type_pass(key: str, value: object) -> None:
    assert kafka_type_problem(key, value) is None
    Settings.build({"client_id": "shop", "kafka": {"bootstrap_servers": "x:1", key: value}})


def test_kbridge_info_refuses_a_mistyped_kafka_setting(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from kbridge.cli import main

    (tmp_path / "typed_app.py").write_text(
        "from kbridge import KBridge\n"
        "app = KBridge(client_id='shop', kafka={'bootstrap_servers': 'x:1', 'session_timeout_ms': 'six'})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(main, ["info", "--app", "typed_app:app"])
    assert result.exit_code == 1
    expected = "kafka['session_timeout_ms'] must be an int (kafka-python's default is 45000), got str 'six'"
    assert expected in result.output


# -- metrics_host and health_host -----------------------------------------------------------------------


def test_metrics_and_health_servers_listen_on_this_host_only_by_default() -> None:
    s = Settings.build({"client_id": "shop", "kafka": {"bootstrap_servers": "x:1"}})
    assert s.metrics_host == s.health_host == DEFAULT_HOST == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "::1", "10.1.2.3", "localhost", "listener-0.kbridge.svc"])
def test_hosts_take_addresses_and_names(host: str) -> None:
    s = Settings.build({"client_id": "shop", "kafka": {"bootstrap_servers": "x:1"}, "metrics_host": host,
                        "health_host": host})
    assert s.metrics_host == s.health_host == host


def test_bad_hosts_are_reported_with_every_other_problem() -> None:
    with pytest.raises(ConfigError) as info:
        KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, metrics_host="", health_host=8080,
                metrics_port=0)
    text = str(info.value)
    assert "metrics_host must be an IP address or a host name to listen on, e.g. '127.0.0.1' (this host only) " \
           "or '0.0.0.0' (every interface), got ''" in text
    assert "health_host must be an IP address or a host name to listen on" in text and "got 8080" in text
    assert "metrics_port must be a TCP port number" in text
    assert "3 problem(s)" in text
