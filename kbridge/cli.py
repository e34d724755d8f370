"""The kbridge command: listen, worker, info, flow, install, topics create, dlq replay.

Every command that needs the app takes --app module:attr (or KBRIDGE_APP); a
framework integration (Django's manage.py, Flask's CLI) passes its app object as
the root context's obj instead. Tables are rendered by kbridge.render.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .app import KBridge
from .errors import KBridgeError
from .loader import HINT, load_app
from .routing import ConsumerGroup

F = TypeVar("F", bound=Callable[..., Any])


def app_option(fn: F) -> F:
    return click.option(
        "--app", "app_spec", envvar="KBRIDGE_APP", metavar="MODULE:ATTR",
        help="The KBridge app, e.g. shop.kafka:app. Defaults to $KBRIDGE_APP.",
    )(fn)


def groups_option(fn: F) -> F:
    return click.option(
        "--consumer-groups", default="", metavar="A,B", help="Only these consumer groups (default: all)."
    )(fn)


def _load(app_spec: str | None) -> KBridge:
    """The app given by a framework integration (click's ctx.obj), else --app / KBRIDGE_APP.

    Only an --app typed on the command line overrides the framework's app; a KBRIDGE_APP
    left in the environment does not.
    """
    ctx = click.get_current_context(silent=True)
    given = ctx.find_root().obj if ctx is not None else None
    typed = ctx is not None and ctx.get_parameter_source("app_spec") == click.core.ParameterSource.COMMANDLINE
    if isinstance(given, KBridge) and not typed:
        return given
    if app_spec and (app_spec.endswith(".py") or "/" in app_spec or "\\" in app_spec):
        module = app_spec.split(":")[0].removesuffix(".py").replace("\\", "/").strip("/").replace("/", ".")
        raise click.ClickException(
            f"--app {app_spec!r} looks like a file path; name the module instead, e.g. --app {module}:app; {HINT}"
        )
    try:
        return load_app(app_spec)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None


def _groups(app: KBridge, consumer_groups: str) -> list[ConsumerGroup]:
    """The selected consumer groups; unknown or empty ones are reported all at once."""
    names = [n.strip() for n in consumer_groups.split(",") if n.strip()]
    try:
        groups = app.routes.select(names)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    if not groups:
        raise click.ClickException(f"app {app.client_id!r} routes no topic; add app.topic(...) or a consumer group")
    return groups


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
@groups_option
def listen(app_spec: str | None, consumer_groups: str) -> None:
    """Consume the routed topics and enqueue their consumers."""
    from .listener import Server

    app = _load(app_spec)
    sys.exit(Server(app, _groups(app, consumer_groups)).run())


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
    from . import render

    app = _load(app_spec)
    routes = render.routes_table(app, one_line=not render.on_terminal())
    render.show(f"kbridge {__version__}", render.settings_table(app), routes)


@main.command()
@app_option
def flow(app_spec: str | None) -> None:
    """Show each route: topic -> consumer -> backend/queue -> responders."""
    from . import render

    app = _load(app_spec)
    render.show(render.flow_table(app))


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--package", default="kafka_app", show_default=True, help="Name of the Python package to create.")
@click.option("--topic", default="events", show_default=True, help="The example consumer's topic.")
def install(directory: Path, package: str, topic: str) -> None:
    """Scaffold an app package: routes, an example consumer, a Celery app.

    It is written into DIRECTORY (default: the current one).

    Existing files are never overwritten: if any would be, nothing is written.
    """
    from .scaffold import install as scaffold

    try:
        made = scaffold(directory, package, topic)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created package {made.package!r} in {made.directory.resolve()}:")
    names = [str(path.relative_to(made.directory)) for path, _ in made.files]
    for name, (_, why) in zip(names, made.files, strict=True):
        click.echo(f"  {name.ljust(max(map(len, names)))}  {why}")
    click.echo("\nNext steps:")
    for number, step in enumerate(made.next_steps(Path.cwd()), 1):
        click.echo(f"  {number}. {step.why}\n     $ {step.command}")
    click.echo(f"\nShow the routing at any time: kbridge flow --app {made.app_spec}")


@main.group()
def topics() -> None:
    """Kafka topics of the routes."""


@topics.command("create")
@app_option
@groups_option
@click.option("--partitions", type=click.IntRange(min=1), default=1, show_default=True,
              help="Partitions of each new topic; listeners of one group share them, so this caps their number.")
@click.option("--replication-factor", type=click.IntRange(min=1), default=1, show_default=True,
              help="Replicas of each new topic; use 3 on a production cluster.")
def topics_create(app_spec: str | None, consumer_groups: str, partitions: int, replication_factor: int) -> None:
    """Create the routed topics and their dead-letter topics that do not exist yet."""
    from . import render
    from .topics import create_topics, routed_topics

    app = _load(app_spec)
    names = routed_topics(_groups(app, consumer_groups))
    try:
        result = create_topics(app.settings, names, partitions, replication_factor)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    table = render.table("topics", "topic", "status")
    for name in names:
        status = f"created, {partitions} partition(s)" if name in result.created else "exists (left unchanged)"
        render.add_row(table, name, status)
    render.show(table)


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
