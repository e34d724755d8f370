"""The kbridge command: tables show settings (secrets masked), routes and the flow; a wrong --app says how
to fix it; install scaffolds a package that loads, and never overwrites a file."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from kbridge import __version__
from kbridge.cli import main
from kbridge.config import Settings
from kbridge.loader import load_app
from kbridge.render import responder_topics
from kbridge.scaffold import consumer_class
from kbridge.scaffold.templates import FILES
from kbridge.topics import routed_topics

SECRETS = "tests.apps.secrets:app"


# Variables that make rich treat a pipe as a terminal; the tests read the pipe format.
NO_TERMINAL: dict[str, str | None] = {"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None}


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={**NO_TERMINAL, **(env or {})})
    return result.exit_code, result.output


def rows(out: str, title: str) -> list[list[str]]:
    """The cells of the table titled `title`: off a terminal, columns are separated by 2+ spaces."""
    lines = out.splitlines()
    start = lines.index(title)
    assert set(lines[start + 2]) == {"─"}, lines[start: start + 3]  # header, then its rule
    found = [lines[start + 1].split()]
    for line in lines[start + 3:]:
        if not line.startswith(" "):
            break
        found.append(re.split(r"\s{2,}", line.strip()))
    return found


def test_info_lists_settings_with_every_secret_masked() -> None:
    code, out = run("info", "--app", SECRETS)
    assert code == 0, out
    assert out.startswith(f"kbridge {__version__}\n")
    assert "hunter2" not in out and "broker-secret" not in out
    table = rows(out, "settings")
    assert table[0] == ["setting", "value"]
    assert all(len(row) == 2 for row in table)
    settings = dict(table[1:])
    kafka = [name for name, _ in table[1:] if name.startswith("kafka.")]
    assert len(kafka) == 5  # the app's five kafka settings, each once
    # Every setting is listed, then the Celery app and tracing, then the kafka settings in name order.
    assert [name for name, _ in table[1:]] == [*(f.name for f in fields(Settings) if f.name != "kafka"), "celery",
                                                "tracing", *sorted(kafka)]
    assert {k: v for k, v in settings.items() if k in EXPECTED_SETTINGS} == EXPECTED_SETTINGS
    floats = [f.name for f in fields(Settings) if f.type == "float"]
    assert floats and all(re.fullmatch(r"\d+(\.\d+)?s", settings[name]) for name in floats)  # seconds


EXPECTED_SETTINGS = {
    "client_id": "vault",
    "shutdown_timeout": "30s",
    "max_poll_records": "500",
    "poll_timeout": "0.5s",
    "enqueue_backoff_max": "30s",
    "dead_letter_timeout": "30s",
    "celery": "vault broker=redis://:**@127.0.0.1:1/0",
    "kafka.bootstrap_servers": "127.0.0.1:1",
    "kafka.sasl_mechanism": "PLAIN",
    "kafka.sasl_plain_password": "*****",
    "kafka.sasl_plain_username": "svc",
    "kafka.security_protocol": "SASL_PLAINTEXT",
}


def test_info_lists_every_route_with_its_delivery_options() -> None:
    code, out = run("info", "--app", SECRETS)
    assert code == 0, out
    assert rows(out, "routes") == [
        ["group", "group_id", "topic", "consumer", "backend", "queue", "options"],
        ["payments", "vault_payments", "charges", "tests.apps.secrets.Noop", "celery", "celery (default)",
         "batch=no timeout=5s max_retries=1 dlq=charges.dlq start_from=beginning dead_letter_breaker=0.5/100+60s"],
        ["audit", "vault_audit", "audit", "tests.apps.secrets.Noop", "inline", "-",
         "batch=no timeout=60s max_retries=3 dlq=audit.dlq start_from=beginning dead_letter_breaker=0.5/100+60s"],
    ]
    assert all(line == line.rstrip() for line in out.splitlines())  # no rich padding in a pipe


def test_flow_shows_topic_consumer_filters_backend_queue_and_responders() -> None:
    code, out = run("flow", "--app", SECRETS)
    assert code == 0, out
    assert rows(out, "flow") == [
        ["group", "topic", "consumer", "filters", "backend", "queue", "responds_to", "flow_control", "payload"],
        ["payments", "charges", "tests.apps.secrets.Noop", "-", "celery", "celery (default)", "-",
         "dead_letter_breaker=0.5/100+60s", "-"],
        ["audit", "audit", "tests.apps.secrets.Noop", "-", "inline", "-", "-", "dead_letter_breaker=0.5/100+60s", "-"],
    ]


def test_flow_names_filters_and_the_celery_apps_default_queue() -> None:
    code, out = run("flow", "--app", "workers:kbridge_app")
    assert code == 0, out
    assert rows(out, "flow")[1:] == [
        ["events", "events", "workers.consumers.EventsConsumer", "not_noise", "celery", "workers (default)", "-",
         "dead_letter_breaker=0.5/100+60s", "-"],
    ]


@pytest.mark.parametrize(
    ("responder", "expected"),
    [
        (None, []),
        (SimpleNamespace(topics=["users.updated", "audit"]), ["users.updated", "audit"]),
        (SimpleNamespace(topics={"users.updated": {"required": True}}), ["users.updated"]),
        (SimpleNamespace(topics=[SimpleNamespace(name="mails")]), ["mails"]),
        (SimpleNamespace(), []),
    ],
)
def test_flow_is_ready_for_routes_with_responders(responder: object, expected: list[str]) -> None:
    route = SimpleNamespace(responder=responder)
    assert responder_topics(route) == expected
    assert responder_topics(SimpleNamespace()) == []  # today's routes have no responder attribute


def test_app_can_come_from_the_environment() -> None:
    code, out = run("info", env={"KBRIDGE_APP": SECRETS})
    assert code == 0, out
    assert ["client_id", "vault"] in rows(out, "settings")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, "no app given"),
        ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'"),
        ("tests.apps.secrets:nope", "has no attribute 'nope'"),
        ("tests.apps.secrets:Noop", "not a KBridge app"),
        ("tests/apps/secrets.py", "looks like a file path; name the module instead, e.g. --app tests.apps.secrets:app"),
    ],
)
def test_wrong_app_gives_a_clear_error(spec: str | None, expected: str) -> None:
    args = ["info"] + (["--app", spec] if spec else [])
    code, out = run(*args, env={"KBRIDGE_APP": ""})
    assert code == 1
    assert expected in out and "--app module:attribute" in out


@pytest.mark.parametrize(
    "command", [["info"], ["flow"], ["listen"], ["worker"], ["topics", "create"], ["dlq", "replay", "x.dlq"]]
)
def test_every_app_command_takes_app_or_kbridge_app(command: list[str]) -> None:
    code, out = run(*command, env={"KBRIDGE_APP": ""})
    assert code == 1 and "Error: no app given: pass --app module:attribute (or set KBRIDGE_APP)" in out
    code, out = run(*command, "--app", "tests.apps.secrets:nope")
    assert code == 1 and "has no attribute 'nope'" in out


@pytest.mark.parametrize("command", [["listen"], ["topics", "create"]])
def test_consumer_groups_are_checked_all_at_once(command: list[str]) -> None:
    code, out = run(*command, "--app", SECRETS, "--consumer-groups", "payments,nope,gone")
    assert code == 1
    assert "unknown consumer group 'nope'" in out and "unknown consumer group 'gone'" in out


def test_routed_topics_lists_each_topic_then_each_dead_letter_topic_once() -> None:
    app = load_app(SECRETS)
    assert routed_topics(app.routes.groups.values()) == ["charges", "audit", "charges.dlq", "audit.dlq"]


def test_version() -> None:
    code, out = run("--version")
    assert code == 0 and out == f"kbridge, version {__version__}\n"


def test_a_framework_can_pass_the_app_object() -> None:
    from tests.apps.secrets import app

    result = CliRunner().invoke(main, ["flow"], obj=app, env={**NO_TERMINAL, "KBRIDGE_APP": ""})
    assert result.exit_code == 0, result.output
    assert ["payments", "charges", "tests.apps.secrets.Noop", "-", "celery", "celery (default)", "-",
            "dead_letter_breaker=0.5/100+60s", "-"] in rows(result.output, "flow")


# -- install ------------------------------------------------------------------------------------------


def test_install_writes_the_package_and_prints_next_steps(tmp_path: Path) -> None:
    code, out = run("install", str(tmp_path), "--package", "shop_events", "--topic", "orders")
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "shop_events").iterdir()) == sorted(FILES)
    commands = re.findall(r"^ {5}\$ (.+)$", out, re.M)
    assert commands == [
        "kbridge dev",
        f"cd {tmp_path.resolve()}",
        "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 CELERY_BROKER_URL=redis://127.0.0.1:6379/0",
        "kbridge topics create --app shop_events:kbridge_app --partitions 3",
        "celery -A shop_events worker --loglevel INFO",
        "kbridge listen --app shop_events:kbridge_app",
        "python -m shop_events.produce",
    ]
    assert "kbridge flow --app shop_events:kbridge_app" in out


def test_install_in_the_current_directory_needs_no_cd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run("install")
    assert code == 0, out
    assert (tmp_path / "kafka_app" / "routes.py").is_file()
    assert re.findall(r"^ {5}\$ (\S+)", out, re.M) == ["kbridge", "export", "kbridge", "celery", "kbridge", "python"]


def test_the_scaffolded_app_loads_routes_and_reads_its_environment(tmp_path: Path) -> None:
    assert run("install", str(tmp_path), "--package", "kbi_scaffold", "--topic", "shop.orders-v2")[0] == 0
    env = {"KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092", "CELERY_BROKER_URL": "redis://redis.example:6379/3"}
    probe = (
        "from kbridge.loader import load_app\n"
        "app = load_app('kbi_scaffold:kbridge_app')\n"
        "import kbi_scaffold\n"
        "print(app.settings.kafka['bootstrap_servers'], app.celery.conf.broker_url,"
        " app.celery is kbi_scaffold.celery_app)\n"
        "print([(r.route_id, r.consumer.__name__, r.backend) for r in app.routes])\n"
        "print('kbridge.perform' in app.celery.tasks)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**_clean_env(), **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "kafka.example:9092 redis://redis.example:6379/3 True",
        "[('kbi_scaffold_shop.orders-v2/shop.orders-v2', 'ShopOrdersV2Consumer', 'celery')]",
        "True",
    ]


def test_the_scaffolded_code_is_lint_clean(tmp_path: Path) -> None:
    assert run("install", str(tmp_path), "--package", "kbi_lint")[0] == 0
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stdout + done.stderr


def test_install_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "kafka_app").mkdir()
    (tmp_path / "kafka_app" / "consumers.py").write_text("# mine\n")
    code, out = run("install", str(tmp_path))
    assert code == 1
    assert "refusing to overwrite existing file(s):" in out and "consumers.py" in out
    assert "nothing was written" in out
    assert [p.name for p in (tmp_path / "kafka_app").iterdir()] == ["consumers.py"]
    assert (tmp_path / "kafka_app" / "consumers.py").read_text() == "# mine\n"


def test_a_second_install_changes_nothing(tmp_path: Path) -> None:
    assert run("install", str(tmp_path))[0] == 0
    before = {p: p.read_text() for p in (tmp_path / "kafka_app").iterdir()}
    code, out = run("install", str(tmp_path))
    assert code == 1 and "refusing to overwrite" in out
    assert {p: p.read_text() for p in (tmp_path / "kafka_app").iterdir()} == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--package", "Shop-Events"], "package 'Shop-Events' is not a lowercase Python identifier"),
        (["--package", "class"], "package 'class' is not a lowercase Python identifier"),
        (["--package", "celery"], "package 'celery' would shadow the installed module"),
        (["--package", "json"], "package 'json' would shadow the installed module"),
        (["--topic", "bad topic"], "topic 'bad topic' is invalid"),
    ],
)
def test_install_rejects_bad_names_before_writing(tmp_path: Path, args: list[str], expected: str) -> None:
    code, out = run("install", str(tmp_path / "proj"), *args)
    assert code == 1 and expected in out, out
    assert not (tmp_path / "proj").exists()


def test_install_into_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("")
    code, out = run("install", str(target))
    assert code != 0 and "afile" in out


@pytest.mark.parametrize(
    ("topic", "expected"),
    [("orders", "OrdersConsumer"), ("shop.orders-v2", "ShopOrdersV2Consumer"), ("9lives", "Topic9livesConsumer")],
)
def test_consumer_class_names_follow_the_topic(topic: str, expected: str) -> None:
    assert consumer_class(topic) == expected


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items()
            if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CELERY_BROKER_URL", "PYTHONPATH")}


def test_kbridge_app_in_the_environment_does_not_override_a_framework_app() -> None:
    from tests.apps.secrets import app

    result = CliRunner().invoke(main, ["info"], obj=app, env={"KBRIDGE_APP": "no_such_module_xyz:app"})
    assert result.exit_code == 0, result.output
    assert "vault" in result.output
