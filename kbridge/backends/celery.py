"""Publishes the kbridge.perform task through the user's own Celery app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import EnqueueError
from ..interchange import to_wire
from ..params import Params
from ..routing.topic import Topic
from ..worker import HARD_LIMIT_GRACE, TASK_NAME

if TYPE_CHECKING:
    from celery import Celery


class CeleryBackend:
    def __init__(self, celery_app: Celery) -> None:
        self.celery_app = celery_app

    def enqueue(self, route: Topic, messages: Sequence[Params]) -> None:
        task = self.celery_app.tasks[TASK_NAME]
        units = [messages] if route.batch_consuming else [[m] for m in messages]
        for unit in units:
            try:
                # retry=False: a broker outage must surface here, so the listener
                # pauses the partition instead of kombu retrying behind its back.
                task.apply_async(
                    args=[route.route_id, [to_wire(p) for p in unit]],
                    queue=route.queue,
                    shadow=route.shadow,
                    serializer="json",
                    soft_time_limit=route.timeout,
                    time_limit=route.timeout + HARD_LIMIT_GRACE,
                    retry=False,
                )
            except Exception as exc:
                raise EnqueueError(
                    f"could not enqueue {route.shadow} offset {unit[0].offset} to the Celery broker: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
