"""A route: one topic of one consumer group, the consumer class that handles it, and its delivery options."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backends import registry
from ..backends.celery.ordering_options import ordering_problems
from ..errors import ConfigError
from ..params import Deserializer, Params, json_deserializer
from ..payloads import payload_model_problems, typed_deserializer
from ..perform.duplicates import skip_duplicates_problems
from .flow import breaker_problems, flow_options, flow_problems
from .names import name_problem
from .pack import pack_problems

if TYPE_CHECKING:
    from ..consumer import BaseConsumer
    from ..responder import Responder

DEFAULTS: dict[str, Any] = {
    "backend": None,  # resolved by the app: "celery" when a Celery app is given, else "inline"
    "deserializer": json_deserializer,
    "batch_consuming": False,
    "max_batch_size": None,  # batch_consuming only: split a polled partition batch into runs of at most this many
    "automatically_mark_as_consumed": True,  # False: only mark_as_consumed() moves the commit (inline only)
    "queue": None,
    "timeout": 60.0,
    "max_retries": 3,
    "retry_backoff": 2.0,
    "retry_backoff_max": 600.0,
    "dead_letter_topic": None,  # "<topic>.dlq"
    "start_from_beginning": True,
    "responder": None,  # a kbridge.Responder subclass: what self.respond_with(...) sends through
    # Typed payloads (kbridge.payloads): a pydantic model, msgspec Struct or dataclass the payload validates into.
    "payload_model": None,
    # flow control and the dead-letter breaker (docs/flow-control.md; kbridge.routing.flow)
    "expire_after": None,  # seconds: older messages (by Kafka timestamp, when fetched) are committed, not handed over
    "delay_by": None,  # seconds: hand a message over no earlier than its timestamp plus this
    "throttle": None,  # (limit, seconds): at most limit messages of a partition handed over per seconds
    "tick_interval": None,  # seconds: consumer.tick() for an assigned partition that got no message for this long
    "dead_letter_max_ratio": 0.5,  # hold the route when more than this share of recent messages is dead-lettered
    "dead_letter_min_messages": 100,  # ... out of at least this many recent messages
    "dead_letter_cooldown": 60.0,  # seconds the route stays held once the breaker trips
    # Execution order and duplicates (kbridge/backends/celery/ordering.py, kbridge/perform/duplicates.py)
    "ordering": None,  # "partition" or "key": run in offset order per partition or per message key (celery)
    "skip_duplicates": False,  # True: perform() completes at most once per (group, topic, partition, offset)
    # pack: messages per task, perform() still once per message (kbridge/routing/pack.py)
    "pack": None,
}


@dataclass(frozen=True)
class Route:
    name: str
    group_name: str
    group_id: str
    consumer: type[BaseConsumer]
    backend: str
    deserializer: Deserializer = json_deserializer
    batch_consuming: bool = False
    max_batch_size: int | None = None
    automatically_mark_as_consumed: bool = True
    queue: str | None = None
    timeout: float = 60.0
    max_retries: int = 3
    retry_backoff: float = 2.0
    retry_backoff_max: float = 600.0
    dead_letter_topic: str = ""
    start_from_beginning: bool = True
    responder: type[Responder] | None = None
    # Typed payloads (kbridge.payloads): the model; deserializer then validates into it.
    payload_model: type | None = None
    # flow control and the dead-letter breaker (docs/flow-control.md)
    expire_after: float | None = None
    delay_by: float | None = None
    throttle: tuple[int, float] | None = None
    tick_interval: float | None = None
    dead_letter_max_ratio: float | None = 0.5
    dead_letter_min_messages: int = 100
    dead_letter_cooldown: float = 60.0
    pattern: re.Pattern[str] | None = None  # group.pattern(): routes every topic whose name matches

    def matches(self, topic: str) -> bool:
        """Whether this route consumes topic (a route name, after the topic mapper)."""
        return topic == self.name if self.pattern is None else self.pattern.fullmatch(topic) is not None
    # Execution order and duplicates (kbridge/backends/celery/ordering.py, kbridge/perform/duplicates.py)
    ordering: str | None = None
    skip_duplicates: bool = False
    # pack: messages per task, perform() still once per message (kbridge/routing/pack.py)
    pack: int | None = None

    @property
    def route_id(self) -> str:
        """The id on the wire; the worker looks the route up by it."""
        return f"{self.group_id}/{self.name}"

    @property
    def shadow(self) -> str:
        """The task name shown in logs and Flower."""
        return f"{self.group_name}/{self.name}"

    def units(self, messages: Sequence[Params]) -> list[Sequence[Params]]:
        """How accepted messages become perform() runs (tasks): one each, or in order in batches of at most
        max_batch_size (the whole polled partition batch when it is None)."""
        if not self.batch_consuming:
            return [[m] for m in messages]
        size = self.max_batch_size or max(len(messages), 1)
        return [messages[i:i + size] for i in range(0, len(messages), size)]


def build_route(
    name: str, *, group_name: str, group_id: str, default_backend: str, has_celery: bool, options: dict[str, Any]
) -> Route:
    """Validate every option at once and build the route."""
    from ..consumer import BaseConsumer

    problems: list[str] = []
    where = f"topic {name!r} in consumer group {group_name!r}"
    if (p := name_problem("topic name", name)) is not None:
        problems.append(p)
    unknown = sorted(set(options) - set(DEFAULTS) - {"consumer"})
    if unknown:
        problems.append(f"{where}: unknown option(s) {', '.join(unknown)}; known: consumer, {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **{k: v for k, v in options.items() if k in DEFAULTS}}

    consumer = options.get("consumer")
    if consumer is None:
        problems.append(f"{where}: consumer= is required (a BaseConsumer subclass)")
    elif not (isinstance(consumer, type) and issubclass(consumer, BaseConsumer)):
        problems.append(f"{where}: consumer must be a BaseConsumer subclass, got {consumer!r}")
    elif consumer.perform is BaseConsumer.perform:
        problems.append(f"{where}: {consumer.__name__} does not implement perform()")

    backend = opts["backend"] or default_backend
    plugin = registry.find(backend) if isinstance(backend, str) else None
    if plugin is None:
        problems.append(f"{where}: backend {backend!r} is unknown; use one of {', '.join(registry.names())}")
    else:
        problems.extend(f"{where}: {p}" for p in plugin.route_problems(opts, has_celery))
    if not callable(opts["deserializer"]):
        problems.append(f"{where}: deserializer must be a callable taking bytes, got {opts['deserializer']!r}")
    for key in ("batch_consuming", "start_from_beginning", "automatically_mark_as_consumed"):
        if not isinstance(opts[key], bool):
            problems.append(f"{where}: {key} must be True or False, got {opts[key]!r}")
    size = opts["max_batch_size"]
    if size is not None:
        if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
            problems.append(f"{where}: max_batch_size must be an integer > 0 or None (no cap), got {size!r}")
        elif opts["batch_consuming"] is not True:
            problems.append(f"{where}: max_batch_size caps the batches of batch_consuming=True; "
                            "set batch_consuming=True or drop max_batch_size")
    if opts["automatically_mark_as_consumed"] is False and plugin is not None and not plugin.performs_in_listener:
        problems.append(
            f"{where}: automatically_mark_as_consumed=False needs backend='inline'. With {backend}, perform() "
            "runs later in a worker that has no Kafka consumer, after the listener has moved on; the "
            "listener could never learn what perform() marked, so nothing would ever be committed"
        )
    if opts["queue"] is not None and (not isinstance(opts["queue"], str) or not opts["queue"]):
        problems.append(f"{where}: queue must be a non-empty string, got {opts['queue']!r}")
    for key in ("timeout", "retry_backoff", "retry_backoff_max"):
        if not _positive_number(opts[key]):
            problems.append(f"{where}: {key} must be a number of seconds > 0, got {opts[key]!r}")
    if not (isinstance(opts["max_retries"], int) and not isinstance(opts["max_retries"], bool)
            and opts["max_retries"] >= 0):
        problems.append(f"{where}: max_retries must be an integer >= 0, got {opts['max_retries']!r}")
    dlq = opts["dead_letter_topic"] or f"{name}.dlq"
    if opts["dead_letter_topic"] is not None and (p := name_problem("dead_letter_topic", dlq)) is not None:
        problems.append(f"{where}: {p}")
    problems.extend(_responder_problems(where, opts["responder"]))
    problems.extend(payload_model_problems(where, opts))
    problems.extend(flow_problems(where, opts) + breaker_problems(where, opts))
    problems.extend(ordering_problems(where, opts, backend) + skip_duplicates_problems(where, opts))
    problems.extend(pack_problems(where, opts, backend, plugin is not None and plugin.performs_in_listener))
    if problems:
        raise ConfigError(problems)

    return Route(
        name=name,
        group_name=group_name,
        group_id=group_id,
        consumer=consumer,  # type: ignore[arg-type]
        backend=backend,
        deserializer=typed_deserializer(opts["deserializer"], opts["payload_model"]),
        batch_consuming=opts["batch_consuming"],
        max_batch_size=opts["max_batch_size"],
        automatically_mark_as_consumed=opts["automatically_mark_as_consumed"],
        queue=opts["queue"],
        timeout=float(opts["timeout"]),
        max_retries=opts["max_retries"],
        retry_backoff=float(opts["retry_backoff"]),
        retry_backoff_max=float(opts["retry_backoff_max"]),
        dead_letter_topic=dlq,
        start_from_beginning=opts["start_from_beginning"],
        responder=opts["responder"],
        payload_model=opts["payload_model"],
        **flow_options(opts),
        ordering=opts["ordering"],
        skip_duplicates=opts["skip_duplicates"],
        pack=opts["pack"],
    )


def _responder_problems(where: str, responder: object) -> list[str]:
    from ..responder import Responder

    if responder is None or (isinstance(responder, type) and issubclass(responder, Responder)):
        return []
    return [f"{where}: responder must be a kbridge.Responder subclass (the class, not an instance), got {responder!r}"]


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0

