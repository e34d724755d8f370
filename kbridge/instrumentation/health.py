"""Liveness and readiness of a listener for Kubernetes probes, from its events, over stdlib HTTP.

- GET /live: 200 while every consumer group's loop turned within liveness_timeout.
  A turn is a poll, or a failed attempt to reach Kafka: a listener waiting out a
  Kafka outage is working as designed, and restarting it would not help. A loop
  stuck (in a filter, an enqueue, a deadlock) stops turning, and the probe fails.
- GET /ready: 200 once every group has joined and received its partition assignment,
  until a rebalance revokes it, a group loses its Kafka brokers (kafka.lost, until
  kafka.restored) or the listener starts stopping. A member given no partitions (more
  listeners than partitions) is ready too: it is a standby, and holding it unready
  would stall a rolling update forever.

Both answer JSON saying why; a 503 carries a "reason". Why events rather than reading the poll loop's state:
the tracker then needs nothing but the monitor, and is testable with a fake clock.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import KBridgeError
from .monitor import Monitor

log = logging.getLogger("kbridge.instrumentation")

DEFAULT_ADDR = "127.0.0.1"  # this host only; the health_host setting (or --health-host) opens it up
IDLE_TIMEOUT = 5.0  # seconds a connection may stay silent before it is closed, with its thread
TICKS = ("poll.started", "poll.finished", "connect.failed")
EVENTS = (*TICKS, "rebalance.assigned", "rebalance.revoked", "kafka.lost", "kafka.restored", "app.stopping")


class HealthTracker:
    """Per group: when its loop last turned, and its current assignment (None while it has none)."""

    def __init__(
        self, group_ids: Iterable[str], liveness_timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.liveness_timeout = liveness_timeout
        self.clock = clock
        started = clock()  # a group that has not turned yet gets liveness_timeout from now to start
        self._last_turn: dict[str, float] = dict.fromkeys(group_ids, started)
        self._assigned: dict[str, list[tuple[str, int]] | None] = dict.fromkeys(self._last_turn)
        self._kafka_lost: dict[str, str] = {}  # group -> the error it lost Kafka with, until kafka.restored
        self._stopping = False
        self._lock = threading.Lock()

    def attach(self, monitor: Monitor) -> HealthTracker:
        for event in EVENTS:
            monitor.subscribe(event, self)
        return self

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        if event == "app.stopping":
            self._stopping = True
            return
        group = payload["group_id"]
        if group not in self._last_turn:
            return  # a group this listener was not asked to run
        with self._lock:
            if event in TICKS:
                self._last_turn[group] = self.clock()
            elif event == "rebalance.assigned":
                self._assigned[group] = sorted((str(t), int(n)) for t, n in payload["partitions"])
            elif event == "rebalance.revoked":
                self._assigned[group] = None  # until the rebalance's new assignment arrives
            elif event == "kafka.lost":
                self._kafka_lost[group] = str(payload.get("error") or "unknown error")
            elif event == "kafka.restored":
                self._kafka_lost.pop(group, None)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        now = self.clock()
        with self._lock:
            ages = {g: round(now - t, 3) for g, t in self._last_turn.items()}
        stuck = sorted(g for g, age in ages.items() if age > self.liveness_timeout)
        return not stuck, {"live": not stuck, "seconds_since_loop_turned": ages, "stuck": stuck,
                           "liveness_timeout": self.liveness_timeout}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            assigned = dict(self._assigned)
            lost = dict(sorted(self._kafka_lost.items()))
        waiting = sorted(g for g, parts in assigned.items() if parts is None)
        reasons = []
        if self._stopping:
            reasons.append("the listener is stopping")
        reasons += [f"consumer group {g} lost its Kafka brokers: {error}" for g, error in lost.items()]
        if waiting:
            reasons.append(f"waiting for a partition assignment: {', '.join(waiting)}")
        ready = not reasons
        body: dict[str, Any] = {
            "ready": ready, "stopping": self._stopping, "waiting_for_assignment": waiting,
            "partitions": {g: [f"{t}-{p}" for t, p in parts or []] for g, parts in assigned.items()},
        }
        if lost:
            body["kafka_lost"] = lost
        if reasons:
            body["reason"] = "; ".join(reasons)
        return ready, body


@dataclass
class HealthServer:
    """ThreadingHTTPServer in a daemon thread: a probe never waits on the poll loop."""

    tracker: HealthTracker
    port: int
    addr: str = DEFAULT_ADDR
    idle_timeout: float = IDLE_TIMEOUT
    _httpd: ThreadingHTTPServer | None = field(default=None, repr=False)

    def start(self) -> HealthServer:
        tracker = self.tracker
        idle_timeout = self.idle_timeout

        class Handler(BaseHTTPRequestHandler):
            # A socket timeout: a connection that sends nothing (a port scan, a half-open probe)
            # is closed after this long, instead of holding a thread for ever.
            timeout = idle_timeout

            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                path = self.path.split("?")[0].rstrip("/")
                if path in ("/live", "/livez", "/healthz"):
                    ok, body = tracker.liveness()
                elif path in ("/ready", "/readyz"):
                    ok, body = tracker.readiness()
                else:
                    self._answer(404, {"error": "not found", "endpoints": ["/live", "/ready"]})
                    return
                self._answer(200 if ok else 503, body)

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, sort_keys=True).encode() + b"\n"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a probe every few seconds would flood the log

        server_class = _IPv6Server if ":" in self.addr else ThreadingHTTPServer
        try:
            self._httpd = server_class((self.addr, self.port), Handler)
        except OSError as exc:
            raise KBridgeError(f"cannot serve health checks on {self.addr}:{self.port}: {exc}") from None
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        threading.Thread(target=self._httpd.serve_forever, name="kbridge-health", daemon=True).start()
        log.info("serving health checks on http://%s:%d/live and /ready", self.addr, self.port)
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve_health(
    monitor: Monitor, group_ids: Iterable[str], port: int, liveness_timeout: float, addr: str = DEFAULT_ADDR
) -> HealthServer:
    """Track the listener's groups through monitor and answer probes on addr:port (0: a free port)."""
    tracker = HealthTracker(group_ids, liveness_timeout).attach(monitor)
    return HealthServer(tracker, port, addr).start()
