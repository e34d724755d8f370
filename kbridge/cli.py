"""The kbridge command: listen, worker, info, flow, install, dev, topics create, dlq show and replay.

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


def metrics_port_option(fn: F) -> F:
    return click.option(
        "--metrics-port", type=click.IntRange(1, 65535), default=None, envvar="KBRIDGE_METRICS_PORT",
        help="Serve Prometheus metrics on this port (needs kbridge[prometheus]). Default: the metrics_port setting.",
    )(fn)


def _host(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .config import is_host

    if value is not None and not is_host(value):
        raise click.BadParameter(f"{value!r} is not an IP address or a host name, e.g. 127.0.0.1 or 0.0.0.0")
    return value


def metrics_host_option(fn: F) -> F:
    return click.option(
        "--metrics-host", metavar="HOST", default=None, envvar="KBRIDGE_METRICS_HOST", callback=_host,
        help="The address the metrics server listens on; 0.0.0.0 for every interface (in a container). "
             "Default: the metrics_host setting (127.0.0.1).",
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


# --reload (kbridge.reload): listen and worker run as a restarted child process
REFUSE_SWARM = "--reload runs one listener process and cannot be combined with --swarm; drop one of them"


def reload_option(fn: F) -> F:
    return click.option(
        "--reload", is_flag=True, default=False,
        help="Development only: restart when a Python file of the project changes (needs kbridge[reload]).",
    )(fn)


def _reload_if_asked(reload: bool, command: str, app_spec: str | None) -> None:
    """With --reload, run this same command as a child, restarted on changes, and exit with its last code."""
    from . import reload as reloader

    if not reload or reloader.in_child():
        return
    try:
        paths = reloader.watched_paths(app_spec, Path.cwd())
        sys.exit(reloader.run(command, paths))
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
    from .instrumentation.logging import quiet_kafka_client

    quiet_kafka_client(logging.getLogger().level)  # kbridge's state lines say it once; --log-level DEBUG shows all


@main.command()
@app_option
@groups_option
@metrics_port_option
@metrics_host_option
@click.option("--health-port", type=click.IntRange(1, 65535), default=None, envvar="KBRIDGE_HEALTH_PORT",
              help="Answer Kubernetes probes on this port: /live and /ready. Default: the health_port setting.")
@click.option("--health-host", metavar="HOST", default=None, envvar="KBRIDGE_HEALTH_HOST", callback=_host,
              help="The address the health server listens on; 0.0.0.0 for every interface (in a container). "
                   "Default: the health_host setting (127.0.0.1).")
@click.option("--log-batches/--no-log-batches", default=True, show_default=True,
              help="Log one INFO line per enqueued partition batch (logger kbridge.events).")
@click.option("--swarm", "swarm_nodes", type=click.IntRange(min=0), default=None, metavar="N",
              help="Fork N supervised listener nodes (default: the swarm_nodes setting; 0 = one plain listener).")
@reload_option
def listen(
    app_spec: str | None, consumer_groups: str, metrics_port: int | None, metrics_host: str | None,
    health_port: int | None, health_host: str | None, log_batches: bool, swarm_nodes: int | None, reload: bool,
) -> None:
    """Consume the routed topics and enqueue their consumers."""
    from .errors import ConfigError
    from .instrumentation.wiring import instrument_listener
    from .listener import listener_process
    from .listener.process import serve_problems
    from .runtime import Runtime

    if reload and swarm_nodes:
        raise click.ClickException(REFUSE_SWARM)
    _reload_if_asked(reload, "kbridge listen", app_spec)
    app = _load(app_spec)
    groups = _groups(app, consumer_groups)
    nodes = swarm_nodes if swarm_nodes is not None else app.settings.swarm_nodes
    if nodes and reload:
        raise click.ClickException(f"{REFUSE_SWARM} (the app sets swarm_nodes={nodes}; pass --swarm 0)")
    if problems := serve_problems(Runtime.of(app), groups):  # before any node or connection starts
        raise click.ClickException(str(ConfigError(problems)))
    if nodes:
        _listen_swarm(app, groups, nodes, metrics_port, health_port, log_batches)
    try:
        served = instrument_listener(
            app, [g.id for g in groups], log_batches=log_batches,
            metrics_port=metrics_port if metrics_port is not None else app.settings.metrics_port,
            health_port=health_port if health_port is not None else app.settings.health_port,
            metrics_host=metrics_host, health_host=health_host,
        )
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        code = listener_process(app, groups).run()
    finally:
        served.close()
    sys.exit(code)


def _listen_swarm(
    app: KBridge, groups: list[ConsumerGroup], nodes: int, metrics_port: int | None, health_port: int | None,
    log_batches: bool,
) -> None:
    """A supervisor and its nodes; servers on a port cannot be shared by N nodes, so they are refused here."""
    from . import swarm
    from .instrumentation.wiring import instrument_listener

    if metrics_port or health_port or app.settings.metrics_port or app.settings.health_port:
        raise click.ClickException(
            "metrics and health ports are not served by swarm nodes yet (each would need its own port); "
            "drop --metrics-port/--health-port (and the metrics_port/health_port settings) or run without --swarm"
        )
    instrument_listener(app, [g.id for g in groups], log_batches=log_batches, metrics_port=None, health_port=None)
    sys.exit(swarm.run(app, groups, nodes=nodes))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@app_option
@metrics_port_option
@metrics_host_option
@reload_option
@click.pass_context
def worker(ctx: click.Context, app_spec: str | None, metrics_port: int | None, metrics_host: str | None,
           reload: bool) -> None:
    """Start a Celery worker for the app; extra arguments go to `celery worker`.

    With a metrics port, the worker's main process serves the metrics of its whole pool
    (prometheus_client's multiprocess mode).
    """
    from .instrumentation import prometheus

    _reload_if_asked(reload, "kbridge worker", app_spec)

    if metrics_port is not None:
        prometheus.prepare_multiprocess()  # before the app, or anything it imports, loads prometheus_client
    app = _load(app_spec)
    if app.celery is None:
        raise click.ClickException(f"app {app.client_id!r} has no Celery app: pass KBridge(celery=...)")
    if metrics_port is not None:
        try:
            host = metrics_host if metrics_host is not None else app.settings.metrics_host
            prometheus.serve_worker_metrics(app.monitor, metrics_port, host)
        except KBridgeError as exc:
            raise click.ClickException(str(exc)) from None
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
@app_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Write the document to this file (.yaml/.yml: YAML, else JSON); default: print JSON.")
def asyncapi(app_spec: str | None, output: Path | None) -> None:
    """Write an AsyncAPI 3.0 document of the routes: channels, operations and payload schemas."""
    import json

    from .asyncapi import document

    doc = document(_load(app_spec))
    if output is not None and output.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise click.ClickException("a .yaml output needs PyYAML (pip install pyyaml); or write .json") from None
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    else:
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}: {len(doc['channels'])} channel(s), {len(doc['operations'])} operation(s)")


@main.command()
@app_option
@groups_option
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for the partitions' high watermarks.")
def lag(app_spec: str | None, consumer_groups: str, timeout: float) -> None:
    """Show each consumer group's lag per partition: committed offset, end offset, lag."""
    from . import render
    from .lag import LIST_OFFSETS, group_lag

    app = _load(app_spec)
    groups = _groups(app, consumer_groups)
    try:
        report = group_lag(app.settings, groups, timeout)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    rows = report.partitions
    table = render.table("lag", "group_id", "topic", "partition", "committed", "end", "lag")
    for r in rows:
        end = render.NONE if r.end is None else f"{r.end}{'*' if r.end_source == LIST_OFFSETS else ''}"
        committed, behind = (render.NONE if v is None else v for v in (r.committed, r.lag))
        render.add_row(table, r.group_id, r.topic, r.partition, committed, end, behind)
    render.show(table)
    click.echo(f"total lag: {sum(r.lag or 0 for r in rows)} in {len(rows)} partition(s) of {len(groups)} group(s)")
    for group_id, topic in report.missing_topics:
        click.echo(f"topic {topic} of {group_id} does not exist in Kafka (kbridge topics create makes it)")
    if any(r.end_source == LIST_OFFSETS for r in rows):
        click.echo("* end offset from ListOffsets(LATEST): no high watermark came in time. Some brokers (Tansu 0.6) "
                   "under-report it, so that lag may be too low.")


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


@main.command()
@click.option("--kafka-port", type=click.IntRange(1, 65535), default=9092, show_default=True,
              help="Port of the local Kafka-protocol broker (Tansu, in memory).")
@click.option("--redis-port", type=click.IntRange(1, 65535), default=6379, show_default=True,
              help="Port of the local Redis, the Celery broker.")
@click.option("--topics-from", "topics_app", default=None, metavar="MODULE:ATTR",
              help="Create this app's routed topics and their dead-letter topics once the broker is up.")
@click.option("--partitions", type=click.IntRange(min=1), default=3, show_default=True,
              help="Partitions of each topic --topics-from creates.")
def dev(kafka_port: int, redis_port: int, topics_app: str | None, partitions: int) -> None:
    """Run a local Kafka and Redis for development, until Ctrl-C (needs kbridge[embedded]).

    Nothing is stored on disk: topics and messages are gone once it stops.
    """
    from . import dev as devserver
    from .topics import create_topics, routed_topics

    app = _load(topics_app) if topics_app else None  # a broken app is reported before anything starts
    try:
        services = devserver.start(kafka_port, redis_port)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if app is not None:
            names = routed_topics(_groups(app, ""))
            made = create_topics(app.settings, names, partitions, 1, bootstrap=services.bootstrap_servers)
            click.echo(f"Topics of {app.client_id}: created {', '.join(made.created) or 'none'}; "
                       f"already there {', '.join(made.existing) or 'none'}")
        click.echo(f"Kafka (Tansu, in memory)  {services.bootstrap_servers}   log: {services.kafka.log_path}")
        click.echo(f"Redis (Celery broker)     {services.broker_url}   log: {services.redis.log_path}")
        click.echo("\nUse these settings in the app's shells (an app made by `kbridge install` reads them):")
        click.echo("  export " + " ".join(f"{k}={v}" for k, v in services.exports.items()))
        click.echo("\nRunning; Ctrl-C stops both (topics and messages are not kept).", nl=True)
        died = devserver.run_until_stopped(services, lambda name: click.echo(f"{name} received: stopping"))
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.stop()
    if died is not None:
        raise click.ClickException(died)
    click.echo("Stopped Kafka and Redis.")


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
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Show at most N letters.")
@click.option("--offset", type=click.IntRange(min=0), default=None,
              help="Start at this offset in each partition (default: the earliest).")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def show(app_spec: str | None, dlq_topic: str, limit: int, offset: int | None, as_json: bool) -> None:
    """Show the letters in a dead-letter topic: where each came from, why it failed, a payload preview.

    Reads without a consumer group, so it changes nothing for `dlq replay`. DLQ_TOPIC is a
    Kafka name. Exit status: 0 shown (or the topic is empty); 1 the topic does not exist or
    Kafka cannot be read.
    """
    import json

    from . import render
    from .dlq_show import read_letters

    app = _load(app_spec)
    try:
        letters = read_letters(app.settings, dlq_topic, limit, offset)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([letter.as_json() for letter in letters], indent=2))
        return
    if not letters:
        where = "" if offset is None else f" from offset {offset}"
        click.echo(f"no dead letters in {dlq_topic}{where}")
        return
    table = render.table(f"{dlq_topic}: {len(letters)} letter(s)", "partition", "offset", "origin", "error",
                         "attempts", "replays", "failed at", "payload")
    for letter in letters:
        error = f"{letter.error_class}: {letter.error_message}" if letter.error_class else "-"
        size = "" if letter.payload_bytes is None else f" ({letter.payload_bytes} B)"
        payload = ("hex " if letter.payload_encoding == "hex" else "") + letter.payload + size
        render.add_row(table, letter.partition, letter.offset, letter.origin, error,
                       render.NONE if letter.attempts is None else letter.attempts, letter.replays,
                       letter.failed_at or render.NONE, payload + (" [cut down]" if letter.truncated else ""))
    render.show(table)


@dlq.command()
@app_option
@click.argument("dlq_topic")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Replay at most N dead letters.")
@click.option("--to", "to_topic", default=None, metavar="TOPIC",
              help="Send every dead letter to this Kafka topic instead of its origin (not an internal __ topic).")
@click.option("--follow", is_flag=True, help="Keep replaying letters as they come, until Ctrl-C.")
@click.option("--max-replays", type=click.IntRange(min=1), default=3, show_default=True, metavar="N",
              help="Skip a letter already replayed N times (a poison message), with a warning.")
@click.option("--force", is_flag=True, help="Replay letters past --max-replays too.")
@click.option("--offsets", default=None, metavar="P:O[,P:O...]",
              help="Replay only these letters (partition:offset); the replay group's position does not move.")
def replay(app_spec: str | None, dlq_topic: str, limit: int | None, to_topic: str | None, follow: bool,
           max_replays: int, force: bool, offsets: str | None) -> None:
    """Re-produce dead-lettered messages to their origin topic, up to the end DLQ_TOPIC has now.

    DLQ_TOPIC and --to are Kafka names (the topic mapper does not apply). A letter goes back
    only to an origin topic the app routes; one from anywhere else (or with no origin) is
    skipped: logged with its offset and why, counted, and committed past, so a rerun does
    not meet it again. It stays in DLQ_TOPIC; --to TOPIC replays such letters elsewhere.
    Each copy counts its replays in a kbridge-replays header; a letter replayed
    --max-replays times is skipped the same way unless --force is given.

    --offsets 0:17,2:5 replays just those letters, read without the replay group, which
    stays where it is: a later full replay that has not passed them sends them again.

    Exit status: 0 every letter replayed; 3 done, but some letters were skipped; 1 an error
    stopped the replay (what was replayed is committed, a rerun resumes); 130 interrupted.
    """
    import signal

    from .replay import ReplayResult, Targets, routed_targets, target_problem
    from .replay import replay as run_replay
    from .replay_progress import Progress
    from .replay_selection import parse_offsets, replay_selected, select

    app = _load(app_spec)
    if to_topic is not None and (problem := target_problem(to_topic, dlq_topic)) is not None:
        raise click.ClickException(f"refusing to replay: {problem}")
    if offsets is not None and (limit is not None or follow):
        raise click.UsageError("--offsets names the letters to replay; it takes no --limit or --follow")
    try:
        selection = None if offsets is None else select(parse_offsets(offsets))
    except KBridgeError as exc:
        raise click.BadParameter(str(exc), param_hint="--offsets") from None
    try:
        targets = routed_targets(app) if to_topic is None else Targets(frozenset(), to_topic)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
    result = ReplayResult()
    progress = Progress.on_terminal(dlq_topic)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)  # stopped like Ctrl-C: counts printed, progress committed
    except ValueError:  # not the main thread (an embedding program): leave its signals alone
        previous = None
    try:
        if selection is not None:
            replay_selected(app.settings, dlq_topic, targets, selection, max_replays, force, result=result)
        else:
            run_replay(app.settings, dlq_topic, targets, limit, follow, max_replays, force, result=result,
                       progress=progress)
    except KeyboardInterrupt:
        progress.clear()
        click.echo(f"interrupted: {result.summary(dlq_topic)}")
        sys.exit(130)
    except KBridgeError as exc:
        progress.clear()
        click.echo(f"stopped: {result.summary(dlq_topic)}")
        raise click.ClickException(str(exc)) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    progress.clear()
    click.echo(result.summary(dlq_topic))
    if result.skipped:
        sys.exit(3)


# -- kbridge web: the dashboard (kbridge.web, the `web` extra) --------------------------------------------
@main.command()
@app_option
@click.option("--host", default="127.0.0.1", show_default=True, envvar="KBRIDGE_WEB_HOST", callback=_host,
              help="Address to listen on; 0.0.0.0 serves every interface (set web_token then).")
@click.option("--port", type=click.IntRange(1, 65535), default=9300, show_default=True, envvar="KBRIDGE_WEB_PORT")
def web(app_spec: str | None, host: str, port: int) -> None:
    """Serve the dashboard: listeners, lag, errors, dead letters, pause and resume."""
    try:
        from .web import serve
    except ImportError as exc:
        raise click.ClickException(f"kbridge web needs the web extra: pip install 'kbridge[web]' ({exc})") from None
    app = _load(app_spec)
    if not app.settings.web_reports:
        click.echo("note: web_reports is off in this app, so its listeners send no reports to show", err=True)
    try:
        serve(app, host, port)
    except KBridgeError as exc:
        raise click.ClickException(str(exc)) from None
