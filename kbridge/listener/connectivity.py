"""Whether a running consumer still reaches any Kafka broker.

kafka-python answers an outage with empty polls, so a listener that lost Kafka would
look idle, and readiness would stay green. This reads the client's connection table:
kafka-python 3.0 keeps it on the consumer's private `_client`, the one such reliance
outside kbridge.listener.decoding. When that attribute is not there (another client
version, a stand-in in tests), the answer is None: unknown, and nothing is reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kbridge.listener")

LOST_AFTER = 5.0  # seconds without any broker connection before the listener reports Kafka lost
CHECK_INTERVAL = 1.0


def broker_connected(consumer: Any) -> bool | None:
    """Never raises: a check that cannot be made must not stop the listener."""
    client = getattr(consumer, "_client", None)
    cluster = getattr(client, "cluster", None)
    connected = getattr(client, "connected", None)
    if cluster is None or connected is None:
        return None
    try:
        brokers = cluster.brokers()
        if not brokers:
            return None
        return any(connected(broker.node_id) for broker in brokers)
    except Exception as exc:
        log.debug("cannot tell whether Kafka is reachable: %s: %s", type(exc).__name__, exc)
        return None


class KafkaWatch:
    """Turns connection checks into two state changes, each emitted once: lost and restored.

    The logging listener's state lines (kbridge.instrumentation.logging) write them.
    """

    def __init__(self, group_id: str, emit: Callable[[str, dict[str, Any]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.group_id = group_id
        self.emit = emit
        self.clock = clock
        self.lost = False
        self._down_since: float | None = None
        self._next_check = 0.0

    def check(self, consumer: Any) -> None:
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        connected = broker_connected(consumer)
        if connected is None:
            return
        if connected:
            self._down_since = None
            if self.lost:
                self.lost = False
                self.emit("kafka.restored", {"group_id": self.group_id})
            return
        if self._down_since is None:
            self._down_since = now
        if not self.lost and now - self._down_since >= LOST_AFTER:
            self.lost = True
            error = f"no connection to any Kafka broker for {now - self._down_since:.0f}s"
            self.emit("kafka.lost", {"group_id": self.group_id, "error": error})
