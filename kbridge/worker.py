"""The one Celery task, kbridge.perform, registered on the user's own Celery app.

It only ever runs consumers routed in this process's app: the route id on the
wire is looked up, never trusted as an import path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import glass
from .interchange import from_wire
from .params import ParamsBatch

if TYPE_CHECKING:
    from celery import Celery

    from .app import KBridge

TASK_NAME = "kbridge.perform"
HARD_LIMIT_GRACE = 10.0  # seconds between the soft limit (after_failure runs) and the hard kill

log = logging.getLogger("kbridge.worker")


def register_task(celery_app: Celery, kbridge_app: KBridge) -> Any:
    @celery_app.task(
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        serializer="json",
    )
    def perform(task: Any, route_id: str, messages: list[dict[str, Any]]) -> None:
        route = kbridge_app.routes.find(route_id)
        batch = ParamsBatch([from_wire(m, route.deserializer) for m in messages])
        glass.run(route.consumer(route, batch))

    return perform
