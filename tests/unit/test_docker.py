"""docker/: there is no Docker engine here, so check what can be checked without one.

The compose file is parsed as YAML, and every claim it makes about this repository is
tested against the repository: the commands parse with the real kbridge and celery CLIs,
the apps they name import, the environment variables are the ones workers/settings.py
reads (and resolve to the compose services), and the build copies files that exist.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from celery.app.utils import find_app
from celery.bin.celery import celery as celery_cli

from kbridge import KBridge
from kbridge.backends.celery.task import HARD_LIMIT_GRACE
from kbridge.cli import main as kbridge_cli
from kbridge.loader import load_app
from kbridge.topics import routed_topics

from .cli_check import parse

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
KBRIDGE_SERVICES = ("topics", "listener", "worker")


def interpolate(value: Any) -> Any:
    """Compose's variable substitution with every variable unset: ${VAR:-default} -> default, $$ -> $."""
    if isinstance(value, str):
        value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)
        assert not re.search(r"(?<!\$)\$\{", value), f"variable without a default: {value}"
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())  # safe_load resolves the `<<` merge keys
    return interpolate(data)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]  # type: ignore[no-any-return]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def settings_names() -> set[str]:
    """Every environment variable workers/settings.py reads (the names passed to _env or os.environ)."""
    tree = ast.parse((ROOT / "workers" / "settings.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_env":
            names |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and ast.unparse(node.func.value) == "os.environ" and isinstance(node.args[0], ast.Constant):
            names.add(node.args[0].value)
    return names


def test_compose_runs_kafka_redis_topic_creation_listeners_and_workers(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "redis", "topics", "listener", "worker"}


def test_kafka_is_a_pinned_single_node_kraft_apache_kafka(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"])
    env = env_of(kafka)
    assert not any("ZOOKEEPER" in k for k in env)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = {}  # name -> port
    for listener in env["KAFKA_LISTENERS"].split(","):
        name, address = listener.split("://")
        listeners[name] = address.rsplit(":", 1)[1]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:{listeners['CONTROLLER']}"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols) == set(listeners)
    advertised = dict(a.split("://") for a in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["PLAINTEXT"] == f"kafka:{listeners['PLAINTEXT']}"
    assert advertised["EXTERNAL"] == f"localhost:{listeners['EXTERNAL']}"
    assert kafka["ports"] == [f"127.0.0.1:{listeners['EXTERNAL']}:{listeners['EXTERNAL']}"]
    # One broker: an internal topic asking for more replicas would never be created.
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1"
    assert "kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in kafka["healthcheck"]["test"][1]


def test_redis_keeps_queued_tasks_across_restarts(services: dict[str, Any], compose: dict[str, Any]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:\d+(\.\d+)*-alpine", redis["image"])
    assert redis["command"] == ["redis-server", "--appendonly", "yes", "--appendfsync", "always"]
    volume, path = redis["volumes"][0].split(":")
    assert path == "/data" and volume in compose["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_kbridge_services_share_one_image_built_from_this_repository(services: dict[str, Any]) -> None:
    builds = {json.dumps(services[s]["build"], sort_keys=True) for s in KBRIDGE_SERVICES}
    images = {services[s]["image"] for s in KBRIDGE_SERVICES}
    assert len(builds) == 1 and len(images) == 1
    build = services["listener"]["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]) == DOCKER / "Dockerfile"


def test_kbridge_commands_parse_and_name_the_workers_app(services: dict[str, Any]) -> None:
    for name, path in (("topics", ["topics", "create"]), ("listener", ["listen"])):
        argv = services[name]["command"]
        assert argv[0] == "kbridge"
        assert parse(kbridge_cli, argv[1:]) == path, name
        spec = argv[argv.index("--app") + 1]
        assert spec == "workers:kbridge_app"
        assert isinstance(load_app(spec), KBridge)


def test_topic_creation_covers_every_route_and_dead_letter_topic(services: dict[str, Any]) -> None:
    argv = services["topics"]["command"]
    assert "--consumer-groups" not in argv  # all groups, so no routed topic is left out
    app = load_app("workers:kbridge_app")
    assert routed_topics(app.routes.groups.values()) == ["events", "events.dlq"]
    partitions = int(argv[argv.index("--partitions") + 1])
    assert partitions >= 2  # room to scale listeners


def test_worker_command_is_a_plain_celery_worker_that_runs_kbridge_tasks(services: dict[str, Any]) -> None:
    import workers

    argv = services["worker"]["command"]
    assert argv[:4] == ["celery", "-A", "workers", "worker"]
    celery_app = find_app("workers")  # exactly how `celery -A workers` finds it
    assert celery_app is workers.celery_app and "kbridge.perform" in celery_app.tasks
    assert workers.kbridge_app.celery is celery_app
    obj = SimpleNamespace(app=celery_app)
    assert parse(celery_cli, argv[1:], obj=obj) == ["worker"]
    probe = services["worker"]["healthcheck"]["test"]
    assert probe[0] == "CMD-SHELL"
    ping = probe[1].split()
    assert ping[:4] == ["celery", "-A", "workers", "inspect"]
    assert parse(celery_cli, ping[1:], obj=obj) == ["inspect"]
    assert "celery@$HOSTNAME" in ping  # the default node name of a worker started without -n


def test_environment_is_what_workers_settings_reads(services: dict[str, Any]) -> None:
    read = settings_names()
    assert {"WORKERS_KAFKA_BOOTSTRAP", "WORKERS_BROKER_URL", "WORKERS_STORE_URL"} <= read
    for name in KBRIDGE_SERVICES:
        env = env_of(services[name])
        assert set(env) <= read, f"{name} sets variables workers/settings.py never reads: {set(env) - read}"
        assert {"WORKERS_KAFKA_BOOTSTRAP", "WORKERS_BROKER_URL"} <= set(env), name
        assert not any(k.startswith("KBRIDGE_DEMO_") for k in env)  # those override everything, for the demo


def test_environment_resolves_to_the_compose_services(services: dict[str, Any]) -> None:
    """Import workers.settings with the compose environment and check where it points."""
    env = env_of(services["listener"])
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WORKERS_", "KBRIDGE_DEMO_"))}
    probe = "import json, workers.settings as s; print(json.dumps([s.KAFKA_BOOTSTRAP, s.BROKER_URL, s.STORE_URL]))"
    done = subprocess.run([sys.executable, "-c", probe], env={**clean, **env}, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    bootstrap, broker, store = json.loads(done.stdout)
    kafka_env = env_of(services["kafka"])
    assert f"PLAINTEXT://{bootstrap}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert re.fullmatch(r"redis://redis:6379/\d+", broker) and re.fullmatch(r"redis://redis:6379/\d+", store)


def test_services_start_in_dependency_order(services: dict[str, Any]) -> None:
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for name in ("listener", "worker"):
        assert services[name]["depends_on"] == {
            "topics": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    for service in services.values():
        for dependency, how in service.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
    assert services["topics"]["restart"].startswith("on-failure")  # a one-off: never restarted after success


def test_listeners_and_workers_can_be_scaled(services: dict[str, Any]) -> None:
    for name in ("listener", "worker"):
        for fixed in ("container_name", "ports", "hostname"):
            assert fixed not in services[name], f"{name} has {fixed}, so --scale {name}=2 would clash"
        assert services[name]["restart"] == "unless-stopped"


def test_stop_grace_periods_cover_a_clean_shutdown(services: dict[str, Any]) -> None:
    app = load_app("workers:kbridge_app")
    assert seconds(services["listener"]["stop_grace_period"]) > app.settings.shutdown_timeout
    longest = max(route.timeout for route in app.routes) + HARD_LIMIT_GRACE
    assert seconds(services["worker"]["stop_grace_period"]) > longest


# -- Dockerfile ------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_is_python_slim_and_runs_as_a_non_root_user() -> None:
    steps = dockerfile()
    assert re.fullmatch(r"python:3\.\d+-slim", steps[0][1])
    users = [i for i, (op, _) in enumerate(steps) if op == "USER"]
    assert users, "no USER: the container would run as root"
    user = steps[users[-1]][1]
    assert user not in ("root", "0")
    assert any(op == "RUN" and "useradd" in args and user in args.split() for op, args in steps)
    last_install = max(i for i, (op, args) in enumerate(steps) if op == "RUN" and "pip install" in args)
    assert users[-1] > last_install  # installs run as root, the processes do not


def test_dockerfile_installs_kbridge_and_copies_the_workers_project() -> None:
    steps = dockerfile()
    copied = [args.split()[:-1] for op, args in steps if op == "COPY"]
    sources = [src for group in copied for src in group]
    assert {"kbridge", "workers", "setup.cfg", "pyproject.toml", "README.md"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not ignored(src), f"{src} is excluded by Dockerfile.dockerignore"
    assert ("RUN", "pip install .") in steps
    env = " ".join(args for op, args in steps if op == "ENV")
    assert "PYTHONPATH=/app" in env and ("WORKDIR", "/app") in steps  # `celery -A workers` works from anywhere
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd[0] == "kbridge" and parse(kbridge_cli, cmd[1:]) == ["listen"]


def ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    result = False
    for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        if fnmatch.fnmatch(path, pattern.lstrip("!")):
            result = not negate
    return result


def test_dockerignore_keeps_the_virtualenv_and_git_out_of_the_build_context() -> None:
    for path in (".venv", ".git", "tests", "bench"):
        assert ignored(path), path
