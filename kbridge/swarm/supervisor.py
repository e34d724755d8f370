"""The swarm supervisor: forks N listener nodes, watches their health, replaces them, stops them.

It is one thread around one select(): node report pipes, node pidfds (readable when
a node exits) and a signal wake-up pipe. It never talks to Kafka or the Celery
broker, so forking stays safe: every node builds its own clients (node.py).

- A node that dies is restarted after RESTART_DELAY, doubled for each further
  consecutive death within QUICK_DEATH of its start (a crash loop), up to MAX_RESTART_DELAY.
- A node that is unhealthy (health.verdict: silent, over its memory cap, poll loop
  stalled) gets one SIGTERM; its ListenerProcess commits what is safe and leaves its groups.
  Past shutdown_timeout + KILL_GRACE it gets SIGKILL. Once it is gone it is restarted.
- SIGTERM, SIGINT or SIGQUIT: one SIGTERM to every node, the same deadline, then exit
  (codes.py). A second signal kills every node at once and exits with 2.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..listener.process import listener_process
from . import events, node
from .codes import EXIT_FAILED, EXIT_OK, EXIT_SHUTDOWN_TIMEOUT, KILL_GRACE, NODE_STOP_SIGNAL
from .events import set_title
from .handle import NodeHandle, describe
from .health import Limits, Report, verdict
from .wakeup import Wakeup

if TYPE_CHECKING:
    from ..app import KBridge
    from ..routing import ConsumerGroup

log = logging.getLogger("kbridge.swarm")

RESTART_DELAY = 2.0
MAX_RESTART_DELAY = 30.0
QUICK_DEATH = 15.0  # a node that dies younger than this is crash-looping: back off its restarts
TURN = 0.5  # longest select() wait: the resolution of health checks and deadlines


@dataclass
class Slot:
    """One of the N node positions; its process changes with every restart."""

    index: int
    handle: NodeHandle | None = None
    reports_fd: int | None = None
    pending: bytes = b""
    started_at: float = 0.0
    last_report_at: float | None = None
    report: Report | None = None
    term_at: float | None = None
    killed: bool = False
    restart_at: float | None = None
    quick_deaths: int = 0
    restarts: int = 0

    @property
    def running(self) -> bool:
        return self.handle is not None and self.handle.returncode is None


class Supervisor:
    def __init__(
        self, app: KBridge, groups: list[ConsumerGroup], nodes: int,
        listener_factory: node.ListenerFactory = listener_process, node_setup: node.NodeSetup | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a swarm needs at least one node, got {nodes}")
        self.app = app
        self.groups = groups
        self.listener_factory = listener_factory
        self.node_setup = node_setup
        self.slots = [Slot(i + 1) for i in range(nodes)]
        self.limits = Limits.from_settings(app.settings)
        self.shutdown_timeout = app.settings.shutdown_timeout
        self.pid = os.getpid()
        self.wakeup = Wakeup()
        self.signals = self.wakeup.received  # stop signals received, in order
        self.stop_codes: dict[int, int] = {}  # node index -> exit code, for nodes stopped by a stop signal
        self._selector: selectors.BaseSelector | None = None

    # -- lifecycle -------------------------------------------------------

    def run(self) -> int:
        """Fork the nodes and supervise them until a stop signal; the exit code (codes.py)."""
        self.pid = os.getpid()
        if threading.current_thread() is not threading.main_thread():
            log.error("the swarm supervisor must run in the main thread: it owns signals and forks")
            return EXIT_FAILED
        problems = node.fork_safety_problems(self.app)
        if problems:
            log.error("cannot start the swarm: %s", "; ".join(problems))
            return EXIT_FAILED
        if threading.active_count() > 1:
            log.warning("%d threads are running in the supervisor; a forked node gets none of them, and any lock "
                        "they held stays locked in it", threading.active_count() - 1)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.wakeup.install(), selectors.EVENT_READ, ("wake", None))
        names = ", ".join(g.id for g in self.groups)
        set_title(f"kbridge swarm supervisor {self.app.client_id} ({len(self.slots)} nodes)")
        self._emit("swarm.supervisor.started",
                   f"swarm supervisor (pid {self.pid}) starting {len(self.slots)} node(s) for group(s) {names}",
                   pid=self.pid, nodes=len(self.slots))
        try:
            for slot in self.slots:
                self._fork(slot)
            while not self.signals:
                self._turn(stopping=False)
            return self._stop_all()
        finally:
            self._cleanup()

    def _stop_all(self) -> int:
        self._emit("swarm.supervisor.stopping",
                   f"{self.signals[0]} received: stopping every node gracefully "
                   f"(SIGTERM; SIGKILL after {self.shutdown_timeout + KILL_GRACE:g}s)", signal=self.signals[0])
        for slot in self.slots:
            slot.restart_at = None
            if slot.running and slot.term_at is None:
                self._terminate(slot, "the swarm is stopping", quiet=True)
        forced = False
        while any(s.running for s in self.slots):
            if len(self.signals) > 1 and not forced:
                forced = True
                log.error("%s received again: killing every node now", self.signals[-1])
                for slot in self.slots:
                    if slot.running and slot.handle is not None and slot.handle.send(signal.SIGKILL):
                        slot.killed = True
            self._turn(stopping=True)
        codes = self.stop_codes
        if forced or any(s.killed for s in self.slots) or EXIT_SHUTDOWN_TIMEOUT in codes.values():
            code = EXIT_SHUTDOWN_TIMEOUT
        else:
            code = EXIT_FAILED if any(c != EXIT_OK for c in codes.values()) else EXIT_OK
        self._emit("swarm.supervisor.stopped",
                   f"swarm stopped; node exit codes {dict(sorted(codes.items()))}; exiting with code {code}",
                   code=code, node_codes=dict(codes))
        return code

    # -- one turn of the loop ---------------------------------------------

    def _turn(self, stopping: bool) -> None:
        assert self._selector is not None
        now = time.monotonic()
        timeout = TURN
        for slot in self.slots:
            if slot.restart_at is not None:
                timeout = min(timeout, max(0.0, slot.restart_at - now))
        for key, _ in self._selector.select(timeout):
            kind, slot = key.data
            if kind == "wake":
                self.wakeup.drain()
            elif kind == "reports":
                self._read_reports(slot)
        self._reap(stopping)
        now = time.monotonic()
        for slot in self.slots:
            if slot.running:
                self._judge(slot, now)
            elif slot.restart_at is not None and slot.restart_at <= now and not (stopping or self.signals):
                slot.restarts += 1
                self._fork(slot)

    def _judge(self, slot: Slot, now: float) -> None:
        assert slot.handle is not None
        if slot.term_at is None:
            last = slot.last_report_at if slot.last_report_at is not None else slot.started_at
            reason = verdict(slot.report, now - last, self.limits)
            if reason is not None:
                self._terminate(slot, reason)
        elif not slot.killed and now > slot.term_at + self.shutdown_timeout + KILL_GRACE:
            self._emit("swarm.node.killing",
                       f"node {slot.index} (pid {slot.handle.pid}) still running "
                       f"{self.shutdown_timeout + KILL_GRACE:g}s after SIGTERM: SIGKILL",
                       level=logging.ERROR, node=slot.index, pid=slot.handle.pid)
            slot.handle.send(signal.SIGKILL)
            slot.killed = True

    def _terminate(self, slot: Slot, reason: str, quiet: bool = False) -> None:
        """Exactly one SIGTERM per node process: a node's ListenerProcess takes a second signal as 'exit now'."""
        assert slot.handle is not None
        if not quiet:
            self._emit("swarm.node.terminating",
                       f"node {slot.index} (pid {slot.handle.pid}) {reason}: replacing it (SIGTERM, then a restart)",
                       level=logging.WARNING, node=slot.index, pid=slot.handle.pid, reason=reason)
        slot.handle.send(NODE_STOP_SIGNAL)
        slot.term_at = time.monotonic()

    def _read_reports(self, slot: Slot) -> None:
        assert slot.reports_fd is not None
        try:
            chunk = os.read(slot.reports_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the node closed its end: it is exiting
            self._close_reports(slot)
            return
        *lines, slot.pending = (slot.pending + chunk).split(b"\n")
        for line in reversed(lines):
            report = Report.decode(line)
            if report is not None:
                slot.report, slot.last_report_at = report, time.monotonic()
                break

    def _reap(self, stopping: bool) -> None:
        for slot in self.slots:
            if slot.handle is None or not slot.running:
                continue
            code = slot.handle.poll()
            if code is None:
                continue
            if slot.reports_fd is not None:
                self._close_reports(slot)
            self._unregister(slot.handle.pidfd)
            slot.handle.close()
            uptime = time.monotonic() - slot.started_at
            if stopping or self.signals:
                self.stop_codes[slot.index] = code
                self._emit("swarm.node.exited",
                           f"node {slot.index} (pid {slot.handle.pid}) stopped with {describe(code)}",
                           node=slot.index, pid=slot.handle.pid, code=code)
                continue
            slot.quick_deaths = slot.quick_deaths + 1 if uptime < QUICK_DEATH else 0
            delay = min(RESTART_DELAY * 2 ** max(0, slot.quick_deaths - 1), MAX_RESTART_DELAY)
            slot.restart_at = time.monotonic() + delay
            level = logging.INFO if slot.term_at is not None and code == EXIT_OK else logging.WARNING
            self._emit("swarm.node.exited",
                       f"node {slot.index} (pid {slot.handle.pid}) exited with {describe(code)} "
                       f"after {uptime:.0f}s; restarting it in {delay:g}s",
                       level=level, node=slot.index, pid=slot.handle.pid, code=code, restart_in=delay)

    # -- forking ---------------------------------------------------------

    def _fork(self, slot: Slot) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # else the child inherits, and writes again, what the parent buffered
        read_fd, write_fd = -1, -1
        try:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
        except OSError as exc:  # EAGAIN, ENOMEM, EMFILE: try again later rather than give up on the slot
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            slot.restart_at = time.monotonic() + MAX_RESTART_DELAY
            self._emit("swarm.node.exited", f"cannot fork node {slot.index}: {exc}; trying again in "
                       f"{MAX_RESTART_DELAY:g}s", level=logging.ERROR, node=slot.index, error=str(exc))
            return
        if pid == 0:
            self._become_node(slot, read_fd, write_fd)  # never returns
        os.close(write_fd)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # the node does it too; whichever runs first wins the race with a Ctrl-C
        os.set_blocking(read_fd, False)
        slot.handle = NodeHandle(pid)
        slot.reports_fd, slot.pending = read_fd, b""
        slot.started_at, slot.last_report_at, slot.report = time.monotonic(), None, None
        slot.term_at, slot.killed, slot.restart_at = None, False, None
        assert self._selector is not None
        self._selector.register(read_fd, selectors.EVENT_READ, ("reports", slot))
        if slot.handle.pidfd is not None:
            self._selector.register(slot.handle.pidfd, selectors.EVENT_READ, ("exit", slot))
        again = f" (restart {slot.restarts})" if slot.restarts else ""
        self._emit("swarm.node.started", f"node {slot.index} started (pid {pid}){again}",
                   node=slot.index, pid=pid, restarts=slot.restarts)

    def _become_node(self, slot: Slot, read_fd: int, write_fd: int) -> None:
        """In the child: drop the supervisor's descriptors, run the node, and never return into the supervisor."""
        code = EXIT_FAILED
        try:
            signal.set_wakeup_fd(-1)  # before closing the supervisor's wake-up pipe, which it points at
            os.close(read_fd)
            for fd in self._descriptors():
                with contextlib.suppress(OSError):
                    os.close(fd)
            code = node.main(self.app, self.groups, node.NodeSpec(slot.index, write_fd, self.pid),
                             self.listener_factory, self.node_setup)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_FAILED
        except BaseException:
            log.exception("node %d failed", slot.index)
        finally:
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def _descriptors(self) -> list[int]:
        """The supervisor's own descriptors: a node must not hold them (a sibling's pipe would never see EOF)."""
        fds = [fd for s in self.slots if s.handle is not None for fd in (s.reports_fd, s.handle.pidfd)
               if fd is not None]
        fds += list(self.wakeup.fds or ())
        if self._selector is not None and hasattr(self._selector, "fileno"):
            fds.append(self._selector.fileno())
        return fds

    def _emit(self, event: str, message: str, *, level: int = logging.INFO, **details: Any) -> None:
        events.emit(event, message, level=level, monitor=self.app.monitor, **details)

    # -- descriptors -------------------------------------------------------

    def _close_reports(self, slot: Slot) -> None:
        if slot.reports_fd is not None:
            self._unregister(slot.reports_fd)
            with contextlib.suppress(OSError):
                os.close(slot.reports_fd)
            slot.reports_fd = None

    def _unregister(self, fd: int | None) -> None:
        if fd is not None and self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)

    def _cleanup(self) -> None:
        self.wakeup.restore()
        for slot in self.slots:
            self._close_reports(slot)
            if slot.handle is not None:
                self._unregister(slot.handle.pidfd)
                slot.handle.close()
        if self._selector is not None:
            self._selector.close()
