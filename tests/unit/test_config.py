from __future__ import annotations

from typing import Any

import pytest

from kbridge.config import Settings, is_secret
from kbridge.errors import ConfigError


def build(**values: Any) -> Settings:
    return Settings.build(values)


def test_valid_settings_with_defaults() -> None:
    s = build(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    assert s.client_id == "shop"
    assert s.kafka == {"bootstrap_servers": "x:1"}
    assert (s.shutdown_timeout, s.max_poll_records) == (30.0, 500)


def test_given_values_are_kept() -> None:
    s = build(client_id="a.b_c-1", kafka={"bootstrap_servers": "x:1"}, shutdown_timeout=5,
                       max_poll_records=10, poll_timeout=0.1, enqueue_backoff_max=2)
    assert (s.shutdown_timeout, s.max_poll_records, s.poll_timeout, s.enqueue_backoff_max) == (5, 10, 0.1, 2)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        build(
            client_id="bad id!",
            kafka={"group_id": "mine", "enable_auto_commit": True},
            shutdown_timeout=-1,
            max_poll_records="x",
        )
    problems = info.value.problems
    needles = [
        "client_id 'bad id!' is invalid",
        "bootstrap_servers'] is required",
        "kafka['group_id'] cannot be set",
        "kafka['enable_auto_commit'] cannot be set",
        "shutdown_timeout must be",
        "max_poll_records must be",
    ]
    assert len(problems) == len(needles), problems
    for needle in needles:
        assert sum(needle in p for p in problems) == 1, (needle, problems)
    assert "6 problem(s)" in str(info.value)


@pytest.mark.parametrize("key", ["auto_offset_reset", "value_deserializer", "key_deserializer"])
def test_other_reserved_kafka_keys(key: str) -> None:
    with pytest.raises(ConfigError, match=f"kafka\\['{key}'\\] cannot be set"):
        build(client_id="c", kafka={"bootstrap_servers": "x:1", key: None})


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"kafka": {"bootstrap_servers": "x:1"}}, "client_id is required"),
        ({"client_id": "c", "kafka": "x:1"}, "kafka must be a dict"),
        ({"client_id": "c", "kafka": {"bootstrap_servers": ""}}, "bootstrap_servers"),
        ({"client_id": "c", "kafka": {"bootstrap_servers": "x:1"}, "poll_timeout": 0}, "poll_timeout"),
        ({"client_id": "c", "kafka": {"bootstrap_servers": "x:1"}, "max_poll_records": 0}, "max_poll_records"),
        ({"client_id": "c", "kafka": {"bootstrap_servers": "x:1"}, "max_poll_records": True}, "max_poll_records"),
        ({"client_id": "c", "kafka": {"bootstrap_servers": "x:1"}, "enqueue_backoff_max": "1"}, "enqueue_backoff_max"),
    ],
)
def test_single_problem(values: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(**values)
    assert len(info.value.problems) == 1 and needle in info.value.problems[0]


def test_unknown_settings_and_kafka_keys_are_reported() -> None:
    with pytest.raises(ConfigError) as info:
        build(client_id="c", kafka={"bootstrap_servers": "x:1", "bootstrap_server": "typo"}, shutdown_timout=3)
    problems = info.value.problems
    assert len(problems) == 2, problems
    assert any("'shutdown_timout'" in p for p in problems)
    assert any("kafka['bootstrap_server']" in p for p in problems)


def test_masked_kafka_hides_secrets_and_keeps_the_rest() -> None:
    kafka = {
        "bootstrap_servers": "broker:9093",
        "security_protocol": "SASL_SSL",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "hunter2",
        "ssl_password": "pem-pass",
        "sasl_oauth_token_provider": object(),
    }
    s = build(client_id="c", kafka=kafka)
    masked = s.masked_kafka()
    assert masked["bootstrap_servers"] == "broker:9093"
    assert masked["security_protocol"] == "SASL_SSL"
    assert masked["sasl_plain_username"] == "alice"
    for key in ("sasl_plain_password", "ssl_password", "sasl_oauth_token_provider"):
        assert masked[key] == "*****", key
    assert "hunter2" not in repr(masked) and "pem-pass" not in repr(masked)
    assert s.kafka["sasl_plain_password"] == "hunter2"  # masking is a copy


@pytest.mark.parametrize("key", ["SSL_PASSWORD", "client_secret", "api_token", "private_key_path"])
def test_is_secret(key: str) -> None:
    assert is_secret(key)


def test_is_not_secret() -> None:
    assert not is_secret("bootstrap_servers")
    assert not is_secret("sasl_mechanism")
