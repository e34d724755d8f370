"""Consumer lifecycle callbacks: after_fetch, before_poll, after_poll and before_stop (Karafka 1.x's).

They are declared like before_enqueue filters, with a decorator on a consumer method, and
BaseConsumer.__init_subclass__ collects them, inherited ones first, in definition order.
All four run in the listener, on the consumer group's polling thread:

- after_fetch: once per polled partition batch of a route, before its filters, on a consumer
  whose params_batch is every fetched message of that partition, in offset order;
- before_poll / after_poll: around every poll of the group (empty polls included), once per
  consumer class routed in the group, with an empty params_batch. after_poll comes after the
  poll's messages were handled and the safe offsets committed;
- before_stop: once per consumer class when the group's listener stops (after its last
  poll, before the final commit and leaving the group), with an empty params_batch.

Callbacks observe the flow; they never decide what happens to a message. One that raises
is logged and the flow carries on exactly as if it had returned, so no callback can lose
(or hold) a message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .params import ParamsBatch

if TYPE_CHECKING:
    from .consumer import BaseConsumer
    from .routing.route import Route

log = logging.getLogger("kbridge.callbacks")

AFTER_FETCH = "after_fetch"
BEFORE_POLL = "before_poll"
AFTER_POLL = "after_poll"
BEFORE_STOP = "before_stop"
KINDS = (AFTER_FETCH, BEFORE_POLL, AFTER_POLL, BEFORE_STOP)

_MARK = "__kbridge_callbacks__"

F = TypeVar("F", bound=Callable[..., Any])


def _declare(fn: F, kind: str) -> F:
    kinds: tuple[str, ...] = getattr(fn, _MARK, ())
    setattr(fn, _MARK, (*kinds, kind))  # one method may serve several kinds
    return fn


def after_fetch(fn: F) -> F:
    """Run after each fetch of a partition, before its filters; self.params_batch is what was fetched."""
    return _declare(fn, AFTER_FETCH)


def before_poll(fn: F) -> F:
    """Run before every poll of the consumer group, once per consumer class; self.params_batch is empty."""
    return _declare(fn, BEFORE_POLL)


def after_poll(fn: F) -> F:
    """Run after every poll was handled and committed, once per consumer class; self.params_batch is empty."""
    return _declare(fn, AFTER_POLL)


def before_stop(fn: F) -> F:
    """Run once when the listener stops the group, before the final commit; self.params_batch is empty."""
    return _declare(fn, BEFORE_STOP)


def collect(cls: type) -> dict[str, tuple[str, ...]]:
    """Method names per callback kind, inherited first, in definition order (like filters)."""
    found: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            for kind in getattr(value, _MARK, ()):
                if name not in found[kind]:
                    found[kind].append(name)
    return {kind: tuple(names) for kind, names in found.items() if names}


def declares(route: Route, kind: str) -> bool:
    return bool(route.consumer._callbacks.get(kind))


def per_consumer_class(routes: Iterable[Route], kind: str) -> list[Route]:
    """The first route of each consumer class that declares kind: group-wide callbacks run once per class."""
    chosen: dict[type[BaseConsumer], Route] = {}
    for route in routes:
        if declares(route, kind) and route.consumer not in chosen:
            chosen[route.consumer] = route
    return list(chosen.values())


def fire(kind: str, route: Route, batch: ParamsBatch | None = None) -> list[Exception]:
    """Run route's callbacks of one kind on a fresh consumer; return (and log) what they raised, never raise."""
    names = route.consumer._callbacks.get(kind, ())
    if not names:
        return []
    errors: list[Exception] = []
    try:
        consumer = route.consumer(route, batch if batch is not None else ParamsBatch([]))
    except Exception as exc:
        log.exception("%s callbacks of %s on %s not run: the consumer could not be built",
                      kind, route.consumer.__name__, route.shadow)
        return [exc]
    for name in names:
        try:
            getattr(consumer, name)()
        except Exception as exc:
            log.exception("%s callback %s.%s on %s raised; ignored, the messages flow on",
                          kind, route.consumer.__name__, name, route.shadow)
            errors.append(exc)
    return errors


def fire_all(kind: str, routes: Iterable[Route]) -> list[Exception]:
    """fire() for each route given, typically per_consumer_class(...)'s choice."""
    errors: list[Exception] = []
    for route in routes:
        errors.extend(fire(kind, route))
    return errors
