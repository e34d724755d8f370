"""The process title (ps, top, htop) shows the client_id, the state and counters, from events.

    kbridge listener shop: running fetched=1200 filtered=300 enqueued=900 dead_lettered=0 lag=14

Why: on a host running several listeners and workers, `ps` then says which is which and
whether one is stuck waiting for Kafka or holding paused partitions, without a
metrics stack. Needs the optional setproctitle package; without it this does nothing.
The title is rewritten at most once per `interval` seconds, and at once on a state change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .monitor import Monitor

COUNTERS = {
    "listener": ("fetched", "filtered", "enqueued", "dead_lettered"),
    "worker": ("performed", "failed", "retried", "dead_lettered"),
}
WAITING = ("starting", "waiting for Kafka", "rebalancing")
EVENTS = (
    "poll.finished",  # changes nothing, but lets the title catch up with the counters every interval
    "app.started", "app.stopping", "connect.failed", "rebalance.assigned", "rebalance.revoked", "fetch",
    "filter.rejected", "enqueue", "enqueue.failed", "perform.finished", "perform.failed", "retry", "dead_letter",
)


def default_setter() -> Callable[[str], None] | None:
    try:
        import setproctitle
    except ImportError:
        return None
    return setproctitle.setproctitle


class ProctitleListener:
    def __init__(
        self,
        client_id: str,
        process: str = "listener",
        interval: float = 1.0,
        setter: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.process = process
        self.interval = interval
        self.setter = setter if setter is not None else default_setter()
        self.clock = clock
        self.state = "starting"
        self.counts = dict.fromkeys(COUNTERS.get(process, COUNTERS["listener"]), 0)
        self.lag: dict[tuple[str, str, int], int] = {}
        self.held: set[tuple[str, str, int]] = set()
        self.title = ""
        self._written = float("-inf")
        self._lock = threading.Lock()

    def attach(self, monitor: Monitor) -> ProctitleListener:
        """Subscribes only if setproctitle is available: otherwise the hot path builds no payload for us."""
        if self.setter is not None:
            for event in EVENTS:
                monitor.subscribe(event, self)
            self._write(force=True)
        return self

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        with self._lock:
            before = self.state
            self._apply(event, payload)
            self._write(force=self.state != before)

    def _apply(self, event: str, p: dict[str, Any]) -> None:
        if event == "fetch":
            self._add("fetched", p["messages"])
            if p["lag"] is not None:
                self.lag[(p["group_id"], p["topic"], p["partition"])] = p["lag"]
        elif event == "filter.rejected":
            self._add("filtered", 1)
        elif event == "enqueue":
            self._add("enqueued", p["messages"])
            self.held.discard((p["group_id"], p["topic"], p["partition"]))
        elif event == "enqueue.failed":
            self.held.add((p["group_id"], p["topic"], p["partition"]))
        elif event == "perform.finished":
            self._add("performed", p["messages"])
        elif event == "perform.failed":
            self._add("failed", p["messages"])
        elif event == "retry":
            self._add("retried", p["messages"])
        elif event == "dead_letter":
            self._add("dead_lettered", 1)
        elif event == "rebalance.revoked":
            gone = {(p["group_id"], t, n) for t, n in p["partitions"]}
            self.held -= gone
            self.lag = {k: v for k, v in self.lag.items() if k not in gone}
        self.state = self._state(event)

    def _state(self, event: str) -> str:
        if event == "app.stopping" or self.state == "stopping":
            return "stopping"
        if event == "connect.failed":
            return "waiting for Kafka"
        if event == "rebalance.revoked":
            return "rebalancing"
        if self.process != "listener":
            return "running"
        if self.state in WAITING and event != "rebalance.assigned":
            return self.state  # fetching and enqueueing start only once partitions are assigned
        return f"holding {len(self.held)} partition(s)" if self.held else "running"

    def _add(self, name: str, amount: int) -> None:
        if name in self.counts:
            self.counts[name] += amount

    def _write(self, force: bool) -> None:
        now = self.clock()
        if self.setter is None or (not force and now - self._written < self.interval):
            return
        counters = " ".join(f"{k}={v}" for k, v in self.counts.items())
        lag = f" lag={sum(self.lag.values())}" if self.process == "listener" else ""
        self.title = f"kbridge {self.process} {self.client_id}: {self.state} {counters}{lag}"
        self._written = now
        self.setter(self.title)
