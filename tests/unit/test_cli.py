"""The kbridge command: info masks secrets and lists routes; a wrong --app says how to fix it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kbridge.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_info_lists_routes_and_masks_every_secret() -> None:
    code, out = run("info", "--app", "tests.apps.secrets:app")
    assert code == 0, out
    assert "hunter2" not in out and "broker-secret" not in out
    assert "sasl_plain_password: *****" in out
    assert "sasl_plain_username: svc" in out
    assert "group payments (group_id vault_payments)" in out
    assert "charges -> tests.apps.secrets.Noop [celery]" in out and "dlq=charges.dlq" in out
    assert "audit -> tests.apps.secrets.Noop [inline]" in out


def test_app_can_come_from_the_environment() -> None:
    code, out = run("info", env={"KBRIDGE_APP": "tests.apps.secrets:app"})
    assert code == 0 and "client_id:        vault" in out


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, "no app given"),
        ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'"),
        ("tests.apps.secrets:nope", "has no attribute 'nope'"),
        ("tests.apps.secrets:Noop", "not a KBridge app"),
    ],
)
def test_wrong_app_gives_a_clear_error(spec: str | None, expected: str) -> None:
    args = ["info"] + (["--app", spec] if spec else [])
    code, out = run(*args, env={"KBRIDGE_APP": ""})
    assert code == 1
    assert expected in out and "--app module:attribute" in out


def test_listen_rejects_unknown_consumer_groups_all_at_once() -> None:
    code, out = run("listen", "--app", "tests.apps.secrets:app", "--consumer-groups", "payments,nope,gone")
    assert code == 1
    assert "unknown consumer group 'nope'" in out and "unknown consumer group 'gone'" in out


def test_version() -> None:
    code, out = run("--version")
    assert code == 0 and "kbridge" in out


def test_a_framework_can_pass_the_app_object() -> None:
    from tests.apps.secrets import app

    result = CliRunner().invoke(main, ["info"], obj=app, env={"KBRIDGE_APP": ""})
    assert result.exit_code == 0 and "client_id:        vault" in result.output
