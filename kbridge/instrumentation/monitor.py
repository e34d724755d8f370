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

# name -> what the payload carries. docs/instrumentation.md lists the same (tests/unit/test_instrumentation.py).
EVENTS: dict[str, str] = {
    "app.started": "process ('listener' or 'worker'), client_id",
    "app.stopping": "process, client_id",
    "app.stopped": "process, client_id, exit_code",
    "signal.received": "signal (name)",
    "connect.failed": "group_id, attempts, delay (seconds to the next attempt), error",
    "poll.started": "group_id",
    "poll.finished": "group_id, messages (count), seconds",
    "fetch": "group_id, topic, partition, messages (count), lag (high watermark - next offset, or None)",
    "filter.rejected": "group_id, topic, partition, offset",
    "filter.failed": "group_id, topic, partition, offset, error",
    "enqueue": "group_id, topic, partition, messages (count), seconds",
    "enqueue.failed": "group_id, topic, partition, offset, error",
    "commit": "group_id, offsets ({'topic-partition': offset})",
    "commit.failed": "group_id, error",
    "perform.started": "route, group_id, topic, partition, offset, messages (count), attempt",
    "perform.finished": "route, group_id, topic, partition, offset, messages (count), attempt, seconds",
    "perform.failed": "route, group_id, topic, partition, offset, messages (count), attempt, seconds, error",
    "retry": "route, group_id, topic, partition, offset, messages (count), attempt, countdown",
    "dead_letter": "route, group_id, topic, partition, offset, dead_letter_topic, error, attempts",
    "produce": "topic, partition, offset",
    "produce.failed": "topic, error",
    "rebalance.assigned": "group_id, partitions",
    "rebalance.revoked": "group_id, partitions",
    "kafka.lost": "group_id, error (the running listener lost its Kafka brokers)",
    "kafka.restored": "group_id (the listener reaches Kafka again)",
    # Listener states (logged by kbridge.instrumentation.logging's STATE_LINES)
    "kafka.waiting": "group_id, servers, error (no broker reachable yet; the listener retries with backoff)",
    "kafka.connected": "group_id, servers (the listener's consumer reached Kafka)",
    "assignment.waiting": "group_id, topics (subscribed; waiting for the group to assign partitions)",
    "partition.held": "group_id, topic, partition, offset, reason",
    "record.undecodable": "group_id, topic, partition, offset, error, action ('held' or 'dead_lettered')",
    # flow control and the dead-letter breaker (docs/flow-control.md)
    "expired": "group_id, topic, partition, messages (count), first_offset, last_offset",
    "breaker.tripped": "group_id, route, topic, partition, messages (recent), dead_lettered, ratio, cooldown",
    "breaker.closed": "group_id, route, topic, partition",
    "swarm.supervisor.started": "pid, nodes (count)",
    "swarm.supervisor.stopping": "signal",
    "swarm.supervisor.stopped": "code, node_codes ({node: exit code})",
    "swarm.node.started": "node, pid, restarts",
    "swarm.node.terminating": "node, pid, reason (why it was found unhealthy)",
    "swarm.node.killing": "node, pid",
    "swarm.node.exited": "node, pid, code, restart_in (seconds), or node and error when it could not fork",
    "swarm.node.orphaned": "node, pid (in the node: its supervisor is gone)",
    "swarm.node.stopped": "node, pid, server_code, code (in the node: exiting because orphaned)",
}

Subscriber = Callable[[str, dict[str, Any]], None]


class Monitor:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = {name: [] for name in EVENTS}
        self._lock = threading.Lock()

    def subscribe(self, event: str, fn: Subscriber) -> Subscriber:
        """fn(event, payload) runs on the thread that emits; keep it quick. '*' subscribes to all."""
        names = _known(event)
        with self._lock:
            for name in names:
                # Copy on write: instrument() iterates without the lock, maybe on another thread.
                self._subscribers[name] = [*self._subscribers[name], fn]
        return fn

    def unsubscribe(self, event: str, fn: Subscriber) -> None:
        """Undo subscribe(event, fn); '*' removes fn from every event. Unknown names are refused the same way."""
        names = _known(event)
        with self._lock:
            for name in names:
                self._subscribers[name] = [f for f in self._subscribers[name] if f is not fn]

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


def _known(event: str) -> list[str]:
    """The names event stands for ('*': all); an unknown name is an error, not a listener that never fires."""
    if event == "*":
        return list(EVENTS)
    if event not in EVENTS:
        raise KBridgeError(f"unknown event {event!r}; known events: {', '.join(EVENTS)}")
    return [event]
