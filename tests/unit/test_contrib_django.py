"""kbridge.contrib.django without services: settings errors, autodiscovery, the perform hook, manage.py kbridge.

Django is configured once for this process (settings.configure, no
DJANGO_SETTINGS_MODULE, so no other test's Celery app gets celery's Django
fixup), with one throwaway installed app whose `consumers` module declares routes.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import django
import pytest
from celery import Celery
from django.core.exceptions import ImproperlyConfigured

from kbridge import BaseConsumer, KBridge
from kbridge.contrib.django import KBridgeSettingsError, build_app, close_old_connections_hook, get_app
from kbridge.contrib.django.conf import read
from kbridge.errors import ConfigError
from kbridge.params import Params, ParamsBatch
from kbridge.perform import ContextStage, Job, PerformRunner, ReentrancyStage
from kbridge.runtime import Runtime

UNIT_APP = "kbridge_django_unit_app"
CONSUMERS = '''
from kbridge import BaseConsumer
from kbridge.contrib.django import kbridge_app

EVENTS = []


class Recorder(BaseConsumer):
    def perform(self):
        from django.db import connection

        connection.cursor().execute("SELECT 1")  # a perform that uses the database
        EVENTS.append("perform")
        if self.params.payload.get("fail"):
            raise RuntimeError("boom")

    def after_failure(self, exc):
        EVENTS.append("after_failure")


kbridge_app.topic("unit-inline", consumer=Recorder, backend="inline")
kbridge_app.topic("unit-queued", consumer=Recorder)
'''
# Importable by name, for KBRIDGE["celery"] given as a path.
celery_for_path = Celery("unit-path", broker="memory://")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from django.conf import settings

    if settings.configured and UNIT_APP not in settings.INSTALLED_APPS:
        pytest.skip("Django was configured by something else in this process")
    root = tmp_path_factory.mktemp("django-unit")
    package = root / UNIT_APP
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "consumers.py").write_text(textwrap.dedent(CONSUMERS))
    sys.path.insert(0, str(root))
    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=[UNIT_APP, "kbridge.contrib.django"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(root / "unit.sqlite3")}},
            KBRIDGE={"client_id": "unit", "kafka": {"bootstrap_servers": "127.0.0.1:1"}, "broker": "memory://"},
        )
        django.setup()
    yield sys.modules[f"{UNIT_APP}.consumers"]


def batch(payload: bytes = b"{}", topic: str = "unit-inline") -> ParamsBatch:
    return ParamsBatch([Params(topic=topic, partition=0, offset=7, raw_payload=payload)])


@pytest.fixture()
def events(project: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What ran, in order: perform, after_failure and the hook's close_old_connections calls."""
    project.EVENTS.clear()
    monkeypatch.setattr("kbridge.contrib.django.hooks.close_old_connections", lambda: project.EVENTS.append("close"))
    return project.EVENTS  # type: ignore[no-any-return]


# --- settings.KBRIDGE ---


def test_missing_setting_says_what_to_add() -> None:
    with pytest.raises(KBridgeSettingsError, match=r"settings.KBRIDGE is not set; add .*\"client_id\": \"shop\""):
        read(None)


def test_every_problem_in_the_dict_is_reported_at_once() -> None:
    with pytest.raises(KBridgeSettingsError) as info:
        read({"kafka": {"group_id": "mine"}, "celery": "no_such_module_xyz:app", "broker": "redis://x",
              "shutdown_timeout": -1, "timeout": 5, "shutdown_timout": 1})
    problems = info.value.problems
    text = str(info.value)
    assert text.startswith(f"settings.KBRIDGE has {len(problems)} problem(s):")
    for expected in [
        "unknown key 'timeout'",
        "unknown key 'shutdown_timout'; did you mean 'shutdown_timeout'?",
        "'client_id' is required",
        "kafka['bootstrap_servers'] is required",
        "kafka['group_id'] cannot be set",
        "shutdown_timeout must be a number of seconds > 0",
        "give either 'celery'",
    ]:
        assert any(expected in p for p in problems), (expected, problems)
    assert not any("stand-in" in p for p in problems)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ImproperlyConfigured)


@pytest.mark.parametrize(
    ("celery", "expected"),
    [
        ("no_such_module_xyz:app", "cannot import 'no_such_module_xyz'"),
        (f"{__name__}:nope", "has no attribute 'nope'"),
        (f"{__name__}:UNIT_APP", "is a str, not a Celery app"),
        (42, "'celery' must be a Celery app or its import path"),
    ],
)
def test_a_wrong_celery_app_names_the_problem_and_the_fix(celery: object, expected: str) -> None:
    with pytest.raises(KBridgeSettingsError, match=expected) as info:
        read({"client_id": "c", "kafka": {"bootstrap_servers": "x:1"}, "celery": celery})
    assert "'shop.celery:app'" in str(info.value)


@pytest.mark.parametrize("spec", [f"{__name__}:celery_for_path", f"{__name__}.celery_for_path", None])
def test_celery_app_by_path_or_object_gets_the_kbridge_task(spec: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = Celery("unit-path", broker="memory://")  # one KBridge per Celery app
    monkeypatch.setattr(sys.modules[__name__], "celery_for_path", fresh)
    conf = {"client_id": "c", "kafka": {"bootstrap_servers": "x:1"}, "celery": spec or fresh, "shutdown_timeout": 5}
    app = build_app(conf)
    assert app.celery is fresh and app.settings.shutdown_timeout == 5
    assert "kbridge.perform" in fresh.tasks


def test_broker_builds_a_celery_app_and_no_celery_means_inline() -> None:
    with_broker = build_app({"client_id": "c", "kafka": {"bootstrap_servers": "x:1"}, "broker": "memory://"})
    assert isinstance(with_broker.celery, Celery) and with_broker.celery.main == "c"
    inline = build_app({"client_id": "c", "kafka": {"bootstrap_servers": "x:1"}})
    assert inline.celery is None and inline.topic("t", consumer=_Noop).backend == "inline"


class _Noop(BaseConsumer):
    def perform(self) -> None:
        pass


# --- the project app ---


def test_the_app_is_built_once_with_the_routes_of_consumers_modules(project: Any) -> None:
    import kbridge.contrib.django as contrib
    import kbridge.contrib.django.app as app_module

    app = get_app()
    assert isinstance(app, KBridge) and app.client_id == "unit"
    assert app is contrib.kbridge_app is app_module.app
    assert app_module.celery_app is app.celery
    assert {r.name: r.backend for r in app.routes} == {"unit-inline": "inline", "unit-queued": "celery"}
    assert app.celery is not None and "kbridge.perform" in app.celery.tasks


def test_the_db_hook_is_wired_for_the_worker_and_inline(project: Any) -> None:
    app = get_app()
    assert close_old_connections_hook in app.perform_hooks
    stages = Runtime.of(app).backend("inline").runner.stages  # type: ignore[attr-defined]
    assert any(isinstance(s, ContextStage) and s.hooks is app.perform_hooks for s in stages)


def worker_side(app: KBridge) -> PerformRunner:
    """The framework-facing stages of the worker's runner: perform hooks around after_failure around perform."""
    return PerformRunner([ContextStage(app.perform_hooks), ReentrancyStage()])


def test_worker_path_closes_old_connections_before_and_after_perform(events: list[str]) -> None:
    app = get_app()
    route = app.routes.find("unit_unit-queued/unit-queued")
    worker_side(app).attempt(Job(route, batch(topic="unit-queued")))
    assert events == ["close", "perform", "close"]


def test_a_failing_perform_still_closes_connections_after_after_failure(events: list[str]) -> None:
    app = get_app()
    route = app.routes.find("unit_unit-queued/unit-queued")
    with pytest.raises(RuntimeError, match="boom"):
        worker_side(app).attempt(Job(route, batch(b'{"fail": true}', "unit-queued")))
    assert events == ["close", "perform", "after_failure", "close"]


def test_inline_backend_runs_the_hook(events: list[str]) -> None:
    app = get_app()
    route = app.routes.find("unit_unit-inline/unit-inline")
    Runtime.of(app).backend("inline").enqueue(route, list(batch()))
    assert events == ["close", "perform", "close"]


def test_a_connection_used_by_perform_is_closed_after_it(project: Any) -> None:
    """For real, without stand-ins: with CONN_MAX_AGE=0 no connection outlives a perform()."""
    from django.db import connection

    app = get_app()
    route = app.routes.find("unit_unit-inline/unit-inline")
    Runtime.of(app).backend("inline").enqueue(route, list(batch()))
    assert connection.connection is None


def test_get_app_refuses_when_the_app_is_not_installed(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.apps import apps

    from kbridge.contrib.django import registry

    monkeypatch.setattr(registry, "_app", None)
    monkeypatch.setattr(apps, "is_installed", lambda name: False)
    with pytest.raises(ImproperlyConfigured, match="add 'kbridge.contrib.django' to INSTALLED_APPS"):
        get_app()


# --- manage.py kbridge ---


def test_call_command_runs_kbridge_subcommands_with_the_project_app(
    project: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from django.core.management import call_command

    call_command("kbridge", "info")
    out = capsys.readouterr().out
    assert "unit-inline" in out and f"{UNIT_APP}.consumers.Recorder" in out


def test_kbridge_errors_become_command_errors(project: Any) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="unknown consumer group 'nope'"):
        call_command("kbridge", "listen", "--consumer-groups", "nope")


def test_django_global_options_are_not_passed_to_kbridge() -> None:
    from kbridge.contrib.django.management.commands.kbridge import without_django_options

    args = ["--settings", "shop.settings", "listen", "--pythonpath=.", "--consumer-groups", "a"]
    assert without_django_options(args) == ["listen", "--consumer-groups", "a"]


def test_a_failed_build_is_never_retried_half_routed(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from kbridge.contrib.django import registry

    def broken(module: str) -> None:
        raise SyntaxError("bad consumers module")

    monkeypatch.setattr(registry, "_app", None)
    monkeypatch.setattr(registry, "_failed", None)
    monkeypatch.setattr(registry, "autodiscover_modules", broken)
    with pytest.raises(SyntaxError):
        get_app()
    with pytest.raises(ImproperlyConfigured, match="failed earlier in this process .*bad consumers module"):
        get_app()
