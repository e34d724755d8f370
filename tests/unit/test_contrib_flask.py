"""Flask integration without services: config keys, precedence, the factory pattern, the app context, the CLI."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import Celery
from flask import Flask, current_app, g

from kbridge import BaseConsumer, KBridge
from kbridge.backends import Backend
from kbridge.backends.celery.task import TASK_NAME
from kbridge.contrib.flask import AppContextHook
from kbridge.errors import ConfigError, KBridgeError
from kbridge.interchange import to_wire
from kbridge.params import Params
from kbridge.runtime import Runtime

KAFKA = {"bootstrap_servers": "x:1"}


def flask_app(name: str = "shop_web", **config: Any) -> Flask:
    app = Flask(name)
    app.config.update(config)
    return app


class FakeDeadLetters:
    """Stands in for the runtime's dead-letter producer; inline(app) runs the app's inline backend with it."""

    def __init__(self, app: KBridge) -> None:
        self.sent: list[tuple[str, BaseException]] = []
        self.runtime = Runtime.of(app, self)  # type: ignore[arg-type]

    def inline(self) -> Backend:
        return self.runtime.backend("inline")

    def send(self, topic: str, params: Params, error: BaseException, attempts: int, group_id: str) -> None:
        self.sent.append((topic, error))


class ContextProbe(BaseConsumer):
    """Records which Flask app was current in perform() and after_failure(), and the `g` it saw."""

    seen: list[tuple[str, str, int]] = []
    fail = False

    def perform(self) -> None:
        g.marker = g.get("marker", 0) + 1  # 1 every time: each run gets a fresh app context
        type(self).seen.append(("perform", current_app.name, g.marker))
        if self.fail:
            raise RuntimeError("boom")

    def after_failure(self, exc: BaseException) -> None:
        type(self).seen.append(("after_failure", current_app.name, g.marker))


def probe(**attrs: Any) -> type[ContextProbe]:
    return type("Probe", (ContextProbe,), {"seen": [], **attrs})


def params(offset: int = 0) -> Params:
    return Params(topic="orders", partition=0, offset=offset, raw_payload=b'{"n": 1}')


# -- configuration ------------------------------------------------------------------------


def test_app_kwarg_configures_from_kbridge_config_keys() -> None:
    celery = Celery("c", broker="memory://")
    web = flask_app(
        KBRIDGE_CLIENT_ID="shop", KBRIDGE_KAFKA=KAFKA, KBRIDGE_CELERY=celery, KBRIDGE_SHUTDOWN_TIMEOUT=5,
        KBRIDGE_MAX_POLL_RECORDS=50,
    )
    app = KBridge(app=web)
    assert (app.client_id, app.settings.kafka, app.celery) == ("shop", KAFKA, celery)
    assert (app.settings.shutdown_timeout, app.settings.max_poll_records) == (5, 50)
    assert TASK_NAME in celery.tasks
    assert web.extensions["kbridge"] is app
    assert [type(h) for h in app.perform_hooks] == [AppContextHook]
    assert app.topic("orders", consumer=probe()).backend == "celery"


def test_every_problem_is_reported_at_once_with_where_it_came_from() -> None:
    web = flask_app(
        KBRIDGE_KAFKA={"bootstrap_servers": "x:1", "group_id": "mine"}, KBRIDGE_CELERY=42,
        KBRIDGE_SHUTDOWN_TIMEOUT=-1, KBRIDGE_CLIENTID="typo",
    )
    with pytest.raises(ConfigError) as info:
        KBridge(app=web, poll_timeout=0)
    problems = info.value.problems
    assert len(problems) == 6, problems
    text = "\n".join(problems)
    assert "unknown Flask config key 'KBRIDGE_CLIENTID'" in text
    assert "KBRIDGE_CELERY must be a Celery app or a broker URL" in text
    assert "client_id is required" in text and "set flask_app.config['KBRIDGE_CLIENT_ID']" in text
    assert "kafka['group_id'] cannot be set" in text and "from flask_app.config['KBRIDGE_KAFKA']" in text
    assert "shutdown_timeout must be" in text and "from flask_app.config['KBRIDGE_SHUTDOWN_TIMEOUT']" in text
    assert "poll_timeout must be" in text and "from KBridge(poll_timeout=...)" in text


def test_explicit_kwargs_win_over_config_and_the_ignored_key_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    web = flask_app(KBRIDGE_CLIENT_ID="from_config", KBRIDGE_KAFKA={"bootstrap_servers": "config:1"},
                    KBRIDGE_SHUTDOWN_TIMEOUT=5)
    with caplog.at_level(logging.WARNING, logger="kbridge.contrib.flask"):
        app = KBridge(client_id="from_code", app=web, shutdown_timeout=9)
    assert (app.client_id, app.settings.shutdown_timeout) == ("from_code", 9)
    assert app.settings.kafka == {"bootstrap_servers": "config:1"}  # not given explicitly: config
    assert "KBRIDGE_CLIENT_ID is ignored" in caplog.text and "KBRIDGE_SHUTDOWN_TIMEOUT is ignored" in caplog.text


def test_a_broker_url_gets_a_celery_app_built_for_it() -> None:
    app = KBridge(app=flask_app(KBRIDGE_CLIENT_ID="shop", KBRIDGE_KAFKA=KAFKA, KBRIDGE_CELERY="memory://"))
    assert isinstance(app.celery, Celery)
    assert app.celery.conf.broker_url == "memory://"
    assert app.celery.main == "shop"
    assert TASK_NAME in app.celery.tasks


# -- the factory pattern: routes at import time, init_app later ----------------------------


def test_routes_declared_before_init_app_use_the_constructor_client_id() -> None:
    celery = Celery("c", broker="memory://")
    app = KBridge(client_id="shop", celery=celery)  # at import time, next to the routes
    with app.consumer_group("sales") as group:
        route = group.topic("orders", consumer=probe())
    assert route.group_id == "shop_sales" and route.backend == "celery"
    with pytest.raises(KBridgeError, match="not configured yet"):
        _ = app.settings
    assert TASK_NAME in celery.tasks  # a `celery -A` worker finds it even before init_app

    app.init_app(flask_app(KBRIDGE_KAFKA=KAFKA))  # later, in create_app()
    assert app.settings.client_id == "shop" and app.routes.find("shop_sales/orders") is route


def test_routes_cannot_be_declared_before_the_client_id_is_known() -> None:
    app = KBridge()
    with pytest.raises(ConfigError, match="pass client_id= to KBridge"):
        app.topic("orders", consumer=probe())
    app.init_app(flask_app(KBRIDGE_CLIENT_ID="shop", KBRIDGE_KAFKA=KAFKA))
    assert app.topic("orders", consumer=probe()).group_id == "shop_orders"


def test_a_celery_app_only_in_config_cannot_change_the_backend_of_routes_already_declared() -> None:
    app = KBridge(client_id="shop")
    app.topic("orders", consumer=probe())  # no Celery app known: inline by default
    web = flask_app(KBRIDGE_KAFKA=KAFKA, KBRIDGE_CELERY=Celery("c", broker="memory://"))
    with pytest.raises(ConfigError, match="pass celery= to KBridge"):
        app.init_app(web)


def test_init_app_again_rebinds_to_the_newer_flask_app() -> None:
    consumer = probe()
    app = KBridge(client_id="shop")
    app.topic("orders", consumer=consumer, backend="inline")
    app.init_app(flask_app("first", KBRIDGE_KAFKA=KAFKA))
    app.init_app(flask_app("second", KBRIDGE_KAFKA={"bootstrap_servers": "y:2"}))
    assert len(app.perform_hooks) == 1 and app.settings.kafka == {"bootstrap_servers": "y:2"}
    FakeDeadLetters(app).inline().enqueue(app.routes.find("shop_orders/orders"), [params()])
    assert consumer.seen == [("perform", "second", 1)]


# -- perform() inside the app context -------------------------------------------------------


def test_inline_backend_runs_perform_and_after_failure_in_a_fresh_app_context() -> None:
    web = flask_app(KBRIDGE_CLIENT_ID="shop", KBRIDGE_KAFKA=KAFKA)
    closed: list[BaseException | None] = []
    web.teardown_appcontext(closed.append)
    app = KBridge(app=web)
    ok, failing = probe(), probe(fail=True)
    app.topic("orders", consumer=ok, backend="inline")
    app.topic("refunds", consumer=failing, backend="inline", max_retries=0)
    dead = FakeDeadLetters(app)

    dead.inline().enqueue(app.routes.find("shop_orders/orders"), [params(0), params(1)])
    dead.inline().enqueue(app.routes.find("shop_refunds/refunds"), [params(2)])

    assert ok.seen == [("perform", "shop_web", 1), ("perform", "shop_web", 1)]
    assert failing.seen == [("perform", "shop_web", 1), ("after_failure", "shop_web", 1)]
    assert [topic for topic, _ in dead.sent] == ["refunds.dlq"]
    assert len(closed) == 3 and isinstance(closed[-1], RuntimeError)  # teardown ran after every run


def test_worker_task_runs_perform_in_the_app_context() -> None:
    celery = Celery("c", broker="memory://")
    consumer = probe()
    app = KBridge(client_id="shop", celery=celery)
    app.topic("orders", consumer=consumer)
    app.init_app(flask_app(KBRIDGE_KAFKA=KAFKA))
    celery.tasks[TASK_NAME].run("shop_orders/orders", [to_wire(params(3))])
    assert consumer.seen == [("perform", "shop_web", 1)]


def test_without_the_hook_perform_has_no_app_context() -> None:
    """The control for the tests above: nothing else provides the context."""
    consumer = probe()
    app = KBridge(client_id="shop", kafka=KAFKA)
    app.topic("orders", consumer=consumer, backend="inline", max_retries=0)
    dead = FakeDeadLetters(app)
    dead.inline().enqueue(app.routes.find("shop_orders/orders"), [params()])
    assert consumer.seen == [] and "application context" in str(dead.sent[0][1])


# -- flask kbridge ... ------------------------------------------------------------------------


def cli_app() -> Flask:
    web = flask_app(KBRIDGE_CLIENT_ID="shop", KBRIDGE_KAFKA={"bootstrap_servers": "x:1", "sasl_plain_password": "pw"})
    app = KBridge(app=web)
    with app.consumer_group("sales") as group:
        group.topic("orders", consumer=probe(), backend="inline")
    return web


def test_flask_kbridge_runs_kbridge_commands_for_this_app() -> None:
    result = cli_app().test_cli_runner().invoke(args=["kbridge", "info"])
    assert result.exit_code == 0, result.output
    # Loose on layout: another change owns info's format.
    assert "shop_sales" in result.output and "orders" in result.output
    assert "sasl_plain_password" in result.output and "pw\n" not in result.output


def test_flask_kbridge_help_lists_kbridge_commands_and_errors_come_through() -> None:
    runner = cli_app().test_cli_runner()
    top = runner.invoke(args=["--help"])
    assert "kbridge" in top.output
    help_ = runner.invoke(args=["kbridge", "--help"])
    assert help_.exit_code == 0 and "Usage: flask kbridge" in help_.output
    assert "listen" in help_.output and "info" in help_.output
    bad = runner.invoke(args=["kbridge", "listen", "--consumer-groups", "nope"])
    assert bad.exit_code == 1 and "unknown consumer group 'nope'" in bad.output
