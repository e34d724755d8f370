"""The node side of a swarm: what a forked child does, from the fork to os._exit.

A node is an ordinary listener (ListenerProcess, one GroupProcessor thread per group) plus
a reporter thread. The node builds every Kafka consumer, dead-letter producer and
Celery/Redis connection itself, after the fork: kafka-python clients and socket
pools do not survive fork(), which is why the supervisor refuses to fork an app
that already created one (fork_safety_problems).

The reporter writes a health report to the supervisor's pipe every second. When
the supervisor is gone (the pipe is broken, or our parent changed) the node is an
orphan: it stops its ListenerProcess gracefully, committing what is safe and leaving its
groups, and exits with EXIT_ORPHANED (3), whatever the ListenerProcess returned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .codes import EXIT_ORPHANED, STOP_SIGNALS
from .events import emit, set_title
from .health import REPORT_INTERVAL, Report, rss_mb

if TYPE_CHECKING:
    from ..app import KBridge
    from ..instrumentation import Monitor
    from ..listener.processor import GroupProcessor
    from ..routing import ConsumerGroup


class NodeListener(Protocol):
    """What a node runs: kbridge.listener.ListenerProcess, or a stand-in in tests."""

    stop: threading.Event

    @property
    def processors(self) -> Sequence[GroupProcessor]: ...

    def run(self) -> int: ...


ListenerFactory = Callable[["KBridge", "list[ConsumerGroup]"], NodeListener]
# Called in each node after the fork, before its ListenerProcess exists: per-node instrumentation
# (a metrics or health server on a port of its own, say) belongs here, never in the supervisor.
NodeSetup = Callable[["KBridge", int], object]


@dataclass(frozen=True)
class NodeSpec:
    index: int  # 1..N, stable across restarts, for logs and process titles
    report_fd: int  # write end of this node's pipe to the supervisor
    supervisor_pid: int


def fork_safety_problems(app: KBridge) -> list[str]:
    """Connections the app already holds: a forked node would share their sockets with its siblings.

    Backends and dead-letter producers belong to a runtime, which each node builds after the fork;
    the app itself holds only its producer for app.produce().
    """
    if app.configured and app.producer.created:
        return ["the app's KafkaProducer already exists in the supervisor; do not call app.produce() "
                "(or a responder) before kbridge.swarm.run()"]
    return []


def main(
    app: KBridge, groups: list[ConsumerGroup], spec: NodeSpec, listener_factory: ListenerFactory,
    setup: NodeSetup | None = None,
) -> int:
    """Run one node until it is stopped; the exit code. Called in the child right after fork()."""
    # Replace the supervisor's handlers at once. Until ListenerProcess.run() installs its own, a stop
    # signal is remembered and honoured: a node told to stop as it starts exits 0, not -15.
    servers: list[NodeListener] = []
    early: list[int] = []

    def stop_early(signum: int, frame: object) -> None:
        early.append(signum)
        for server in servers:
            server.stop.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop_early)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the supervisor only, which stops nodes one TERM each
    _tag_logs(f"[node {spec.index} pid {os.getpid()}]")
    set_title(f"kbridge swarm node {spec.index} {app.client_id}")
    os.set_blocking(spec.report_fd, False)
    if setup is not None:
        setup(app, spec.index)
    server = listener_factory(app, groups)
    servers.append(server)
    if early:
        server.stop.set()
    reporter = Reporter(server, spec, app.monitor)
    reporter.start()
    try:
        code = server.run()
    finally:
        reporter.finish()
    if reporter.orphaned.is_set():
        emit("swarm.node.stopped", f"node {spec.index} stopped (listener code {code}); exiting with code "
             f"{EXIT_ORPHANED} because its supervisor is gone", level=logging.WARNING, monitor=app.monitor,
             node=spec.index, pid=os.getpid(), server_code=code, code=EXIT_ORPHANED)
        return EXIT_ORPHANED
    return code


class Reporter(threading.Thread):
    """Every REPORT_INTERVAL: write a Report to the supervisor, or notice that it is gone."""

    def __init__(self, server: NodeListener, spec: NodeSpec, monitor: Monitor | None = None) -> None:
        super().__init__(daemon=True, name=f"kbridge-swarm-report-{spec.index}")
        self.server = server
        self.spec = spec
        self.monitor = monitor
        self.orphaned = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        while True:
            if os.getppid() != self.spec.supervisor_pid or not self._send():
                self._orphan()
                return
            if self._done.wait(REPORT_INTERVAL):
                return

    def finish(self) -> None:
        self._done.set()
        self.join(REPORT_INTERVAL + 1)
        with contextlib.suppress(OSError):
            os.close(self.spec.report_fd)

    def report(self) -> Report:
        now = time.monotonic()
        ages: dict[str, float | None] = {
            p.group.id: (now - p.stats.last_tick if p.stats.last_tick else None) for p in self.server.processors
        }
        return Report(self.spec.index, os.getpid(), rss_mb(), ages, self.server.stop.is_set())

    def _send(self) -> bool:
        """False when the supervisor cannot be reached any more."""
        try:
            os.write(self.spec.report_fd, self.report().encode())
        except BlockingIOError:
            pass  # the supervisor is busy and the pipe full; it judges silence itself
        except OSError:  # BrokenPipeError: the read end died with the supervisor
            return False
        return True

    def _orphan(self) -> None:
        self.orphaned.set()
        emit("swarm.node.orphaned", f"node {self.spec.index}: supervisor (pid {self.spec.supervisor_pid}) is gone; "
             "stopping gracefully (committing what is safe, leaving the groups)", level=logging.WARNING,
             monitor=self.monitor, node=self.spec.index, pid=os.getpid())
        self.server.stop.set()


class _Tagged(logging.Formatter):
    """Prefixes every line of a node with its identity, so interleaved node logs stay readable."""

    def __init__(self, inner: logging.Formatter, tag: str) -> None:
        super().__init__()
        self.inner = inner
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.tag} {self.inner.format(record)}"


def _tag_logs(tag: str) -> None:
    for handler in logging.getLogger().handlers:
        inner = handler.formatter
        if isinstance(inner, _Tagged):
            inner = inner.inner
        handler.setFormatter(_Tagged(inner or logging.Formatter(), tag))
