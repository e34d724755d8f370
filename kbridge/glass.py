"""The wrapper every perform() runs in, on both backends (SidekiqGlass's role).

- reentrancy: after_failure(exc) sees every failure, timeouts included;
- retries: exponential backoff with jitter, up to the topic's max_retries;
- then the dead-letter topic. A payload that cannot be deserialized is dead-lettered
  at once: retrying cannot fix it.

The celery backend applies this policy in kbridge.worker with Celery's own retry;
the inline backend applies it here, in the listener.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import TYPE_CHECKING, Any

from .consumer import BaseConsumer
from .deadline import deadline
from .errors import DeserializationError
from .params import ParamsBatch

if TYPE_CHECKING:
    from .dlq import DeadLetters
    from .instrumentation import Monitor
    from .routing.topic import Topic

log = logging.getLogger("kbridge.glass")

NOT_RETRIED = (DeserializationError,)


PerformHook = Callable[[BaseConsumer], AbstractContextManager[object]]


def run(consumer: BaseConsumer, hooks: Sequence[PerformHook] = ()) -> None:
    """perform() and, on failure, after_failure() inside every hook (outermost first)."""
    with ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook(consumer))
        try:
            consumer.perform()
        except BaseException as exc:
            try:
                consumer.after_failure(exc)
            except Exception:
                log.exception("%s.after_failure raised while handling %r", type(consumer).__name__, exc)
            raise


def perform(
    route: Topic, batch: ParamsBatch, hooks: Sequence[PerformHook] = (), monitor: Monitor | None = None,
    attempt: int = 1,
) -> None:
    """run() with the perform.started / .finished / .failed events around it (worker and inline alike)."""
    if monitor is None:
        run(route.consumer(route, batch), hooks)
        return
    where = where_payload(route, batch)
    monitor.instrument("perform.started", **where, attempt=attempt)
    started = time.monotonic()
    try:
        run(route.consumer(route, batch), hooks)
    except BaseException as exc:
        monitor.instrument("perform.failed", **where, attempt=attempt,
                           seconds=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")
        raise
    monitor.instrument("perform.finished", **where, attempt=attempt,
                       seconds=time.monotonic() - started)


def where_payload(route: Topic, batch: ParamsBatch) -> dict[str, Any]:
    """route, group_id, topic, partition, offset (of the batch's first message) and messages, for perform and retry."""
    first = batch[0]
    return {"route": route.route_id, "group_id": route.group_id, "topic": first.topic,
            "partition": first.partition, "offset": first.offset, "messages": len(batch)}


def should_retry(route: Topic, exc: BaseException, retries_done: int) -> bool:
    return not isinstance(exc, NOT_RETRIED) and retries_done < route.max_retries


def backoff(route: Topic, retries_done: int) -> float:
    """Exponential, with equal jitter so workers retrying together spread out but never retry at once."""
    ceiling = min(route.retry_backoff_max, route.retry_backoff * 2.0**retries_done)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def run_inline(
    route: Topic, batch: ParamsBatch, dead_letters: DeadLetters, hooks: Sequence[PerformHook] = (),
    monitor: Monitor | None = None,
) -> int:
    """Run perform() under the policy; returns the number of attempts made.

    Raises only if dead-lettering itself failed, so the listener holds the messages.
    """
    retries = 0
    while True:
        try:
            with deadline(route.timeout, f"{route.consumer.__name__}.perform on {route.shadow}"):
                perform(route, batch, hooks, monitor, retries + 1)
            return retries + 1
        except Exception as exc:
            if should_retry(route, exc, retries):
                delay = backoff(route, retries)
                log.warning(
                    "%s attempt %d/%d failed: %s: %s; retrying in %.1fs",
                    route.shadow, retries + 1, route.max_retries + 1, type(exc).__name__, exc, delay,
                )
                if monitor is not None:
                    monitor.instrument("retry", **where_payload(route, batch), attempt=retries + 1, countdown=delay)
                time.sleep(delay)
                retries += 1
                continue
            for params in batch:
                dead_letters.send(route.dead_letter_topic, params, exc, retries + 1, route.group_id)
            return retries + 1
