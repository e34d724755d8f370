"""The celery backend, both halves of it: everything Celery-specific in kbridge lives in this package.

- publisher: the listener's half, enqueueing kbridge.perform tasks (Redis through one
  pipeline per poll batch, other brokers through apply_async with confirms);
- redis_pipeline and ledger: the Redis fast path and the ledger that closes kombu's
  BRPOP-to-unacked window;
- task: the worker's half, the one registered task and its runtime;
- signals: the worker's lifecycle as kbridge events, and its metrics server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...app import KBridge
    from ...routing.route import Route
    from ...runtime import Runtime
    from .publisher import CeleryBackend


class CeleryPlugin:
    name = "celery"
    performs_in_listener = False

    def route_problems(self, options: Mapping[str, Any], has_celery: bool) -> list[str]:
        if not has_celery:
            return ["backend 'celery' needs KBridge(celery=<your Celery app>)"]
        return []

    def bind(self, app: KBridge) -> None:
        """Registered at import time of the app module, so an unmodified `celery -A proj worker` runs kbridge
        tasks; and the worker's lifecycle signals."""
        from . import signals, task, tick

        assert app.celery is not None
        task.register_task(app.celery, app)
        tick.register_tick_task(app.celery, app)
        signals.connect(app.celery, app)

    def serve_problems(self, runtime: Runtime, routes: Sequence[Route]) -> list[str]:
        from ...perform.gates import store_problems
        from .ordering import broker_problems

        if runtime.celery is None:
            return []
        return broker_problems(runtime.celery, list(routes)) + store_problems(runtime, routes)

    def build(self, runtime: Runtime) -> CeleryBackend:
        from .publisher import CeleryBackend
        from .refetch import KafkaRefetch

        if runtime.celery is None:
            raise RuntimeError("the celery backend needs the app's Celery app")  # refused when routes are declared
        return CeleryBackend(runtime.celery, runtime.settings.redelivery_after,
                             KafkaRefetch(runtime.settings, runtime.routes))


PLUGIN = CeleryPlugin()
