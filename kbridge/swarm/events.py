"""Visibility of swarm state changes: one log line each, and the same event on the app's monitor.

Every supervisor and node state change goes through emit(), which logs the line and
hands the event to the monitor (kbridge.instrumentation), the one event bus: subscribe
there, e.g. app.monitor.subscribe("swarm.node.exited", fn). Event names follow
Karafka's "swarm.*" vocabulary:

- swarm.supervisor.started / .stopping / .stopped
- swarm.node.started / .terminating (unhealthy) / .killing / .exited, in the supervisor
- swarm.node.orphaned (its supervisor is gone) / .stopped (exiting with code 3), in the node
"""

from __future__ import annotations

import logging
from typing import Any

from ..instrumentation import Monitor

log = logging.getLogger("kbridge.swarm")


def emit(event: str, message: str, *, level: int = logging.INFO, monitor: Monitor | None = None,
         **details: Any) -> None:
    """Log message and emit the event; the monitor logs a failing subscriber and never lets it stop the swarm."""
    log.log(level, message)
    if monitor is not None:
        monitor.instrument(event, **details)


def set_title(title: str) -> None:
    """Name the process in ps/top when setproctitle is installed (optional); otherwise do nothing."""
    try:
        import setproctitle  # type: ignore[import-not-found]
    except ImportError:
        return
    setproctitle.setproctitle(title)
