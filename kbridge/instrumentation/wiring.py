"""What `kbridge listen` turns on around a listener: activity logs, process title, metrics, health checks.

One function so that the CLI, framework commands and an embedding program set a
listener up the same way, and stop its servers the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .logging import LoggingListener
from .proctitle import ProctitleListener

if TYPE_CHECKING:
    from ..app import KBridge


class _Closable(Protocol):
    port: int

    def close(self) -> None: ...


@dataclass
class ListenerInstrumentation:
    """The servers started for a listener; close() stops them (the listener itself is not touched)."""

    metrics: _Closable | None = None
    health: _Closable | None = None
    _closables: list[_Closable] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for server in self._closables:
            server.close()
        self._closables.clear()


def instrument_listener(
    app: KBridge,
    group_ids: Iterable[str],
    *,
    metrics_port: int | None = None,
    health_port: int | None = None,
    metrics_host: str | None = None,
    health_host: str | None = None,
    log_batches: bool = True,
    proctitle: bool = True,
) -> ListenerInstrumentation:
    """Subscribe the chosen listeners to app.monitor and start the chosen servers (a port of None: not served).

    A host of None is the app's metrics_host / health_host setting (127.0.0.1 unless set).
    """
    found = ListenerInstrumentation()
    LoggingListener.states().attach(app.monitor)  # always: the states are what an operator reads first
    if log_batches:
        LoggingListener().attach(app.monitor)
    if proctitle:
        ProctitleListener(app.client_id, "listener").attach(app.monitor)
    try:
        if metrics_port is not None:
            from .prometheus import serve_listener_metrics

            host = metrics_host if metrics_host is not None else app.settings.metrics_host
            found.metrics = serve_listener_metrics(app.monitor, metrics_port, host)
            found._closables.append(found.metrics)
        if health_port is not None:
            from .health import serve_health

            host = health_host if health_host is not None else app.settings.health_host
            found.health = serve_health(app.monitor, group_ids, health_port, app.settings.liveness_timeout, host)
            found._closables.append(found.health)
    except BaseException:
        found.close()
        raise
    return found
