"""The kbridge command: listen, worker, info."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__
from .app import KBridge
from .errors import KBridgeError
from .loader import load_app

F = TypeVar("F", bound=Callable[..., Any])


def app_option(fn: F) -> F:
    return click.option(
        "--app", "app_spec", envvar="KBRIDGE_APP", metavar="MODULE:ATTR",
        help="The KBridge app, e.g. shop.kafka:app. Defaults to $KBRIDGE_APP.",
    )(fn)


def _load(app_spec: str | None) -> KBridge:
    """The app given by a framework integration (click's ctx.obj), else --app / KBRIDGE_APP."""
    ctx = click.get_current_context(silent=True)
    given = ctx.find_root().obj if ctx is not None else None
    if isinstance(given, KBridge) and not app_spec:
        return given
    try:
        return load_app(app_spec)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(__version__, prog_name="kbridge")
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
def main(log_level: str) -> None:
    """Kafka topics to Celery tasks, at least once."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s [%(name)s] %(message)s", stream=sys.stderr
    )
    # kafka-python narrates every connection at INFO; its warnings and errors still show.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))


@main.command()
@app_option
@click.option("--consumer-groups", default="", metavar="A,B", help="Only these consumer groups (default: all).")
def listen(app_spec: str | None, consumer_groups: str) -> None:
    """Consume the routed topics and enqueue their consumers."""
    from .listener import Server

    app = _load(app_spec)
    names = [n.strip() for n in consumer_groups.split(",") if n.strip()]
    try:
        groups = app.routes.select(names)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    if not groups:
        raise click.ClickException(f"app {app.client_id!r} routes no topic; add app.topic(...) or a consumer group")
    sys.exit(Server(app, groups).run())


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@app_option
@click.pass_context
def worker(ctx: click.Context, app_spec: str | None) -> None:
    """Start a Celery worker for the app; extra arguments go to `celery worker`."""
    app = _load(app_spec)
    if app.celery is None:
        raise click.ClickException(f"app {app.client_id!r} has no Celery app: pass KBridge(celery=...)")
    app.celery.worker_main(argv=["worker", *ctx.args])


@main.command()
@app_option
def info(app_spec: str | None) -> None:
    """Print settings (secrets masked) and routes."""
    app = _load(app_spec)
    s = app.settings
    click.echo(f"kbridge {__version__}")
    click.echo(f"client_id:        {s.client_id}")
    click.echo(f"shutdown_timeout: {s.shutdown_timeout}s")
    click.echo(f"max_poll_records: {s.max_poll_records}")
    click.echo(f"celery:           {_celery_line(app)}")
    click.echo("kafka:")
    for key, value in sorted(s.masked_kafka().items()):
        click.echo(f"  {key}: {value}")
    click.echo("routes:")
    for group in app.routes.groups.values():
        click.echo(f"  group {group.name} (group_id {group.id})")
        for t in group.topics.values():
            where = t.backend + (f" queue={t.queue}" if t.queue else "")
            click.echo(
                f"    {t.name} -> {t.consumer.__module__}.{t.consumer.__qualname__} [{where}] "
                f"batch={t.batch_consuming} timeout={t.timeout:g}s max_retries={t.max_retries} "
                f"dlq={t.dead_letter_topic}"
            )


def _celery_line(app: KBridge) -> str:
    if app.celery is None:
        return "none (inline backend)"
    conn = app.celery.connection_for_write()
    return f"{app.celery.main} broker={conn.as_uri(include_password=not conn.password)}"


@main.group()
def dlq() -> None:
    """Dead-letter topics."""


@dlq.command()
@app_option
@click.argument("dlq_topic")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Replay at most N dead letters.")
def replay(app_spec: str | None, dlq_topic: str, limit: int | None) -> None:
    """Re-produce dead-lettered messages to their origin topic."""
    from .replay import replay as run_replay

    app = _load(app_spec)
    try:
        result = run_replay(app.settings, dlq_topic, limit)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"replayed {result.replayed} message(s) from {dlq_topic}"
               + (f"; skipped {result.skipped} without origin headers" if result.skipped else ""))
