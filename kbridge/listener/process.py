"""The listener process: one GroupProcessor thread per consumer group, and signals turned into a graceful stop.

SIGINT, SIGTERM and SIGQUIT ask every group to stop fetching, commit what is safe and
leave its group. Past shutdown_timeout (or on a second signal) the process exits with 2.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from ..backends import registry
from ..errors import ConfigError, KBridgeError
from ..runtime import Runtime
from .collector import tune_collector
from .controls import Controls
from .processor import GroupProcessor

if TYPE_CHECKING:
    from ..app import KBridge
    from ..reports import ListenerReporter
    from ..routing import ConsumerGroup, Route

log = logging.getLogger("kbridge.listener")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
EXIT_OK, EXIT_FAILED, EXIT_SHUTDOWN_TIMEOUT = 0, 1, 2
SUMMARY_INTERVAL = 10.0


class ListenerProcess:
    def __init__(self, runtime: Runtime, groups: list[ConsumerGroup]) -> None:
        self.runtime = runtime
        self.stop = threading.Event()
        # kbridge web: pause commands reach the chain through controls; a reporter publishes the state
        controls = Controls() if runtime.settings.web_reports else None
        paused = controls.is_paused if controls is not None else None
        self.processors = [GroupProcessor(runtime, g, self.stop, paused) for g in groups]
        self.reporter: ListenerReporter | None = None
        if controls is not None:
            from ..reports import ListenerReporter

            self.reporter = ListenerReporter(runtime.settings, self.processors, controls, runtime.monitor)
        self._errors: list[BaseException] = []
        self._signals = 0

    def run(self) -> int:
        """Block until stopped; return the process exit code."""
        monitor, client_id = self.runtime.monitor, self.runtime.client_id
        monitor.instrument("app.started", process="listener", client_id=client_id)
        code = self._run()
        monitor.instrument("app.stopped", process="listener", client_id=client_id, exit_code=code)
        return code

    def _run(self) -> int:
        self._install_signals()
        if threading.current_thread() is threading.main_thread():
            tune_collector()  # this process is the listener's own; embedded, the host's collector stays as it is
        threads = [
            threading.Thread(target=self._run_group, args=(p,), name=f"kbridge-{p.group.name}", daemon=True)
            for p in self.processors
        ]
        for t in threads:
            t.start()
        if self.reporter is not None:
            self.reporter.start()
        last_summary = time.monotonic()
        summaries = {p.group.id: p.summary() for p in self.processors}
        while not self.stop.wait(0.2):
            if not all(t.is_alive() for t in threads):
                self.stop.set()
            elif time.monotonic() - last_summary >= SUMMARY_INTERVAL:
                last_summary = time.monotonic()
                for p in self.processors:
                    summary = p.summary()
                    if summary != summaries[p.group.id]:  # an idle or waiting listener stays quiet
                        summaries[p.group.id] = summary
                        log.info("group %s: %s", p.group.id, summary)
        self.runtime.monitor.instrument("app.stopping", process="listener", client_id=self.runtime.client_id)
        deadline = time.monotonic() + self.runtime.settings.shutdown_timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self.reporter is not None:
            self.reporter.close()
        self.runtime.close()
        if any(t.is_alive() for t in threads):
            log.error(
                "shutdown_timeout of %.1fs passed with groups still stopping; exiting with code %d",
                self.runtime.settings.shutdown_timeout, EXIT_SHUTDOWN_TIMEOUT,
            )
            return EXIT_SHUTDOWN_TIMEOUT
        return EXIT_FAILED if self._errors else EXIT_OK

    def _run_group(self, processor: GroupProcessor) -> None:
        try:
            processor.run()
        except BaseException as exc:
            self._errors.append(exc)
            log.error("consumer group %s failed: %s: %s", processor.group.id, type(exc).__name__, exc,
                      exc_info=not isinstance(exc, KBridgeError))
            self.stop.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded use: the caller owns signals and sets self.stop
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        self.runtime.monitor.instrument("signal.received", signal=name)
        if self._signals > 1:
            log.error("%s received again during shutdown; exiting now with code %d", name, EXIT_SHUTDOWN_TIMEOUT)
            os._exit(EXIT_SHUTDOWN_TIMEOUT)
        log.info("%s received: stopping, committing what is safe and leaving the groups", name)
        self.stop.set()



def listener_process(app: KBridge, groups: list[ConsumerGroup]) -> ListenerProcess:
    """The composition root of a listener: this process's runtime, built from the app, handed down."""
    runtime = Runtime.of(app)
    if problems := serve_problems(runtime, groups):
        raise ConfigError(problems)
    return ListenerProcess(runtime, groups)


def serve_problems(runtime: Runtime, groups: list[ConsumerGroup]) -> list[str]:
    """Each backend's objections to serving the routes of these groups, before anything connects."""
    by_backend: dict[str, list[Route]] = {}
    for group in groups:
        for route in group.routes():
            by_backend.setdefault(route.backend, []).append(route)
    problems: list[str] = []
    for name, routes in by_backend.items():
        check = getattr(registry.find(name), "serve_problems", None)  # a plugin written before the hook has none
        if check is not None:
            problems.extend(check(runtime, routes))
    return problems
