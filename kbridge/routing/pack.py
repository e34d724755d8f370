"""pack=N: up to N consecutive messages of one partition travel in one task, while perform() still runs once per
message with its own retries, dead letter and timeout (kbridge/backends/celery/pack.py runs them).

A pack exists only on the way to the worker: it saves Celery's per-task cost (about a millisecond of a
prefork worker's time) for consumers that handle one message at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .route import Route

MAX_PACK = 1000  # one task message stays well under a megabyte of small payloads
T = TypeVar("T")


def pack_problems(where: str, opts: dict[str, Any], backend: object, performs_in_listener: bool) -> list[str]:
    size = opts.get("pack")
    if size is None:
        return []
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_PACK):
        return [f"{where}: pack must be an integer from 1 to {MAX_PACK} (messages per task) or None, got {size!r}"]
    if opts.get("batch_consuming") is True:
        return [f"{where}: pack packs messages for a per-message perform(); with batch_consuming=True a task "
                "already carries a whole batch, so drop pack (or max_batch_size caps the batch)"]
    if opts.get("ordering"):
        return [f"{where}: pack runs a pack's messages in one task, and ordering gates whole tasks by "
                "partition or key; use one or the other"]
    if performs_in_listener:
        return [f"{where}: pack saves the per-task cost of a worker; backend {backend!r} runs "
                "perform() in the listener, so drop pack or use backend='celery'"]
    return []


def task_units(route: Route, messages: Sequence[T]) -> list[Sequence[T]]:
    """What one hand-over call becomes as tasks: the whole call (a batch), packs of at most route.pack, or one
    message each."""
    if route.batch_consuming:
        return [messages]
    if route.pack:
        size = route.pack
        return [messages[i:i + size] for i in range(0, len(messages), size)]
    return [[m] for m in messages]


def task_time_limits(route: Route, hard_grace: float) -> tuple[float, float]:
    """(hard, soft) limits of one task: a pack may take each message's timeout in turn, and the worker enforces
    the timeout per message inside it."""
    soft = route.timeout * (route.pack or 1)
    return soft + hard_grace, soft
