"""Visibility of swarm state changes: one log line each, plus one hook point for instrumentation.

Every supervisor and node state change goes through emit(). It logs the line,
calls the listeners subscribed here (subscribe(fn)), and hands the event to the
app's monitor (kbridge.instrumentation) once the monitor's fixed EVENTS list
names it; until then the monitor, which refuses unknown names, is left alone.
Event names follow Karafka's "swarm.*" vocabulary:

- swarm.supervisor.started / .stopping / .stopped
- swarm.node.started / .terminating (unhealthy) / .killing / .exited, in the supervisor
- swarm.node.orphaned (its supervisor is gone) / .stopped (exiting with code 3), in the node
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..instrumentation import EVENTS, Monitor

log = logging.getLogger("kbridge.swarm")

Listener = Callable[[str, dict[str, Any]], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    """listener(event_name, details) is called for every swarm event, in the process that emits it."""
    _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def emit(event: str, message: str, *, level: int = logging.INFO, monitor: Monitor | None = None,
         **details: Any) -> None:
    """Log message and hand (event, details) to every listener; a failing listener never stops the swarm."""
    log.log(level, message)
    if monitor is not None and event in EVENTS:
        monitor.instrument(event, **details)
    for listener in list(_listeners):
        try:
            listener(event, details)
        except Exception:
            log.exception("swarm event listener %r failed on %s", listener, event)


def set_title(title: str) -> None:
    """Name the process in ps/top when setproctitle is installed (optional); otherwise do nothing."""
    try:
        import setproctitle  # type: ignore[import-not-found]
    except ImportError:
        return
    setproctitle.setproctitle(title)
