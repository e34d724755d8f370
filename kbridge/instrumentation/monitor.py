"""The monitor: kbridge's named events and their subscribers.

The list of events is fixed and documented, so a typo in a subscription is an error
at once rather than a listener that silently never fires. A subscriber that raises
is logged and does not break the pipeline it observes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..errors import KBridgeError

log = logging.getLogger("kbridge.monitor")

# name -> what the payload carries
EVENTS: dict[str, str] = {
    "app.started": "process ('listener' or 'worker'), client_id",
    "app.stopping": "process, client_id",
    "app.stopped": "process, client_id, exit_code",
    "signal.received": "signal (name)",
    "poll.started": "group_id",
    "poll.finished": "group_id, messages (count), seconds",
    "fetch": "group_id, topic, partition, messages (count), lag (high watermark - next offset, or None)",
    "filter.rejected": "group_id, topic, partition, offset",
    "filter.failed": "group_id, topic, partition, offset, error",
    "enqueue": "group_id, topic, partition, messages (count), seconds",
    "enqueue.failed": "group_id, topic, partition, offset, error",
    "commit": "group_id, offsets ({'topic-partition': offset})",
    "commit.failed": "group_id, error",
    "perform.started": "route, topic, partition, offset, attempt",
    "perform.finished": "route, topic, partition, offset, attempt, seconds",
    "perform.failed": "route, topic, partition, offset, attempt, seconds, error",
    "retry": "route, topic, partition, offset, attempt, countdown",
    "dead_letter": "route, topic, partition, offset, dead_letter_topic, error, attempts",
    "produce": "topic, partition, offset",
    "produce.failed": "topic, error",
    "rebalance.assigned": "group_id, partitions",
    "rebalance.revoked": "group_id, partitions",
}

Subscriber = Callable[[str, dict[str, Any]], None]


class Monitor:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = {name: [] for name in EVENTS}
        self._lock = threading.Lock()

    def subscribe(self, event: str, fn: Subscriber) -> Subscriber:
        """fn(event, payload) runs on the thread that emits; keep it quick. '*' subscribes to all."""
        names = list(EVENTS) if event == "*" else [event]
        for name in names:
            if name not in EVENTS:
                raise KBridgeError(f"unknown event {name!r}; known events: {', '.join(EVENTS)}")
        with self._lock:
            for name in names:
                self._subscribers[name].append(fn)
        return fn

    def instrument(self, event: str, **payload: Any) -> None:
        subscribers = self._subscribers[event]  # KeyError for an unknown name: a bug in kbridge itself
        for fn in subscribers:
            try:
                fn(event, payload)
            except Exception:
                log.exception("subscriber %r of %s raised", fn, event)

    def listens(self, event: str) -> bool:
        """Cheap check for the hot path: skip building a payload nobody reads."""
        return bool(self._subscribers[event])
