"""A Celery worker's lifecycle as kbridge events, and its metrics server, through Celery's own signals.

Why signals: `celery -A proj worker` (no kbridge command involved) must behave like
`kbridge worker`, so whatever a worker does at start-up hangs off Celery's signals,
connected when the KBridge app binds its Celery app. worker_init fires in the worker's
main process before the pool forks, which is where a metrics server serving the whole
pool belongs (kbridge.instrumentation.prometheus).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery.signals import worker_init, worker_shutdown, worker_shutting_down

if TYPE_CHECKING:
    from celery import Celery

    from ...app import KBridge


def connect(celery_app: Celery, kbridge_app: KBridge) -> None:
    """Emit app.started / app.stopping / app.stopped (process='worker') and serve metrics_port if set."""
    state: dict[str, Any] = {"started": False, "exit_code": 0}

    @worker_init.connect(weak=False)
    def _started(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not celery_app:
            return  # the signal is process-wide; another Celery app's worker
        state["started"] = True
        kbridge_app.monitor.instrument("app.started", process="worker", client_id=kbridge_app.client_id)
        port = kbridge_app.settings.metrics_port if kbridge_app.configured else None
        if port is not None:
            from ...instrumentation.prometheus import serve_worker_metrics

            serve_worker_metrics(kbridge_app.monitor, port, kbridge_app.settings.metrics_host)
        if kbridge_app.configured and kbridge_app.settings.web_reports:
            from ...reports import FailureReporter

            FailureReporter(kbridge_app.settings).attach(kbridge_app.monitor)  # pool processes inherit it

    @worker_shutting_down.connect(weak=False)
    def _stopping(exitcode: int | None = None, **_: Any) -> None:
        if state["started"]:
            state["exit_code"] = exitcode or 0
            kbridge_app.monitor.instrument("app.stopping", process="worker", client_id=kbridge_app.client_id)

    @worker_shutdown.connect(weak=False)
    def _stopped(sender: Any = None, **_: Any) -> None:
        if state["started"] and getattr(sender, "app", None) is celery_app:
            kbridge_app.monitor.instrument(
                "app.stopped", process="worker", client_id=kbridge_app.client_id, exit_code=state["exit_code"]
            )
