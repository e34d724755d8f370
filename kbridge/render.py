"""Tables for the kbridge command: readable in a terminal, one line per row in a pipe or a log.

Cells are plain Text, never rich markup, so a value such as "[celery]" or a user's
topic name prints as written. Off a terminal the console is made wide enough that
no row wraps: `kbridge flow | grep orders` then finds the whole route.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from urllib.parse import urlsplit, urlunsplit

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from .app import KBridge
from .config import is_secret
from .instrumentation import tracing
from .payloads import model_kind
from .routing import Route

NONE = "-"
PIPE_WIDTH = 1000  # columns when not writing to a terminal


def console() -> Console:
    """A console on the current stdout (click's, under CliRunner), without colours off a terminal."""
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out.width = PIPE_WIDTH
    return out


def on_terminal() -> bool:
    return console().is_terminal


def show(*renderables: RenderableType) -> None:
    """Print to stdout; off a terminal, without the padding rich adds to the end of every line."""
    out = console()
    if out.is_terminal:
        for r in renderables:
            out.print(r)
        return
    with out.capture() as captured:
        for r in renderables:
            out.print(r)
    out.file.write("\n".join(line.rstrip() for line in captured.get().splitlines()) + "\n")


def table(title: str, *columns: str) -> Table:
    """Borderless, so columns are separated by spaces only and `awk` or a test can split them."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE, header_style="bold", show_edge=False)
    for name in columns:
        t.add_column(name, overflow="fold")
    return t


def add_row(t: Table, *cells: object) -> None:
    t.add_row(*(Text(str(c)) for c in cells))


def seconds(value: float) -> str:
    return f"{value:g}s"


def consumer_name(route: Route) -> str:
    return f"{route.consumer.__module__}.{route.consumer.__qualname__}"


def queue_name(app: KBridge, route: Route) -> str:
    """The queue the listener really publishes to: the topic's own, else the Celery app's default."""
    if route.backend != "celery":
        return NONE
    if route.queue:
        return route.queue
    default = app.celery.conf.task_default_queue if app.celery is not None else NONE
    return f"{default} (default)"


def celery_line(app: KBridge) -> str:
    """The Celery app and its broker, with the broker password masked."""
    if app.celery is None:
        return "none (inline backend)"
    conn = app.celery.connection_for_write()
    return f"{app.celery.main} broker={conn.as_uri(include_password=not conn.password)}"


def responder_topics(route: object) -> list[str]:
    """The topics a route's responder produces to; empty until routes carry a `responder`.

    Accepts a responder whose `topics` is a mapping or an iterable of names or of
    objects with a `name`, so the table needs no change when responders arrive.
    """
    responder = getattr(route, "responder", None)
    if responder is None:
        return []
    declared = getattr(responder, "topics", None)
    if declared is None:
        return []
    names: Iterable[object] = declared.keys() if isinstance(declared, Mapping) else declared
    return [n if isinstance(n, str) else str(getattr(n, "name", n)) for n in names]


def payload_label(route: Route) -> str:
    """The route's payload_model and its kind, e.g. 'shop.models.Order (pydantic)'; '-' when untyped."""
    model = route.payload_model
    if model is None:
        return NONE
    return f"{model.__module__}.{model.__qualname__} ({model_kind(model)})"


def settings_table(app: KBridge) -> Table:
    t = table("settings", "setting", "value")
    s = app.settings
    for f in fields(s):
        if f.name == "kafka":
            continue
        value = getattr(s, f.name)
        if is_secret(f.name) and value is not None:
            value = "*****"
        elif f.name == "duplicate_store_url" and value:
            value = masked_url(value)
        # Every float setting is a number of seconds (config.py validates them as such).
        add_row(t, f.name, seconds(value) if f.type in ("float", float) else value)
    add_row(t, "celery", celery_line(app))
    add_row(t, "tracing", tracing.state())
    for key, value in sorted(s.masked_kafka().items()):
        add_row(t, f"kafka.{key}", value)
    return t


def topic_cell(route: Route) -> str:
    """A topic route's name; a pattern route's name and the regular expression it matches."""
    return route.name if route.pattern is None else f"{route.name}=/{route.pattern.pattern}/"


def flow_options(route: Route) -> list[str]:
    """Flow control and the dead-letter breaker, as name=value: only what the route sets, and the breaker."""
    shown = [f"{k}={seconds(v)}" for k, v in (("expire_after", route.expire_after), ("delay_by", route.delay_by),
                                              ("tick_interval", route.tick_interval)) if v is not None]
    if route.throttle is not None:
        shown.append(f"throttle={route.throttle[0]}/{seconds(route.throttle[1])}")
    if route.dead_letter_max_ratio is None:
        shown.append("dead_letter_breaker=off")
    else:
        shown.append(f"dead_letter_breaker={route.dead_letter_max_ratio:g}/{route.dead_letter_min_messages}"
                     f"+{seconds(route.dead_letter_cooldown)}")
    return shown


def routes_table(app: KBridge, one_line: bool = True) -> Table:
    """One row per route. The delivery options share a cell: one line each on a terminal, so the
    table fits a narrow one, and space-separated in a pipe, so each route stays on one line."""
    t = table("routes", "group", "group_id", "topic", "consumer", "backend", "queue", "options")
    for group in app.routes.groups.values():
        for r in group.routes():
            options = [
                f"batch={'yes' if r.batch_consuming else 'no'}", f"timeout={seconds(r.timeout)}",
                f"max_retries={r.max_retries}", f"dlq={r.dead_letter_topic}",
                f"start_from={'beginning' if r.start_from_beginning else 'latest'}",
                *flow_options(r),
                *execution_options(r),
            ]
            if r.payload_model is not None:  # typed payloads
                options.append(f"payload_model={payload_label(r)}")
            add_row(
                t, group.name, group.id, topic_cell(r), consumer_name(r), r.backend, queue_name(app, r),
                (" " if one_line else "\n").join(options),
            )
    return t


FLOW_COLUMNS = ("group", "topic", "consumer", "filters", "backend", "queue", "responds_to", "flow_control", "payload")


def flow_rows(app: KBridge) -> list[dict[str, str]]:
    """topic -> consumer (and its filters, which run in the listener) -> backend/queue -> responder topics;
    then the route's flow control, and the payload_model the payload validates into."""
    return [
        dict(zip(FLOW_COLUMNS, (
            group.name, topic_cell(r), consumer_name(r), ", ".join(r.consumer._filters) or NONE,
            " ".join([r.backend, *execution_options(r)]), queue_name(app, r),
            ", ".join(responder_topics(r)) or NONE, " ".join(flow_options(r)) or NONE,
            payload_label(r),
        ), strict=True))
        for group in app.routes.groups.values() for r in group.routes()
    ]


def flow_table(app: KBridge) -> Table:
    """The flow_rows as a table (kbridge flow); kbridge web shows the same rows."""
    t = table("flow", *FLOW_COLUMNS)
    for row in flow_rows(app):
        add_row(t, *row.values())
    return t


def execution_options(route: Route) -> list[str]:
    """ordering, pack and skip_duplicates, shown only when set (next to the backend in flow: they change how it
    runs)."""
    shown = [f"ordering={route.ordering}"] if route.ordering else []
    shown += [f"pack={route.pack}"] if route.pack else []
    return shown + (["skip_duplicates=yes"] if route.skip_duplicates else [])


def masked_url(url: str) -> str:
    """A URL with its password replaced, so `kbridge info` can be pasted into a ticket."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}*****@{parts.hostname}" + (f":{parts.port}" if parts.port else "")))
