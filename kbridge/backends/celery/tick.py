"""kbridge.tick: consumer.tick() of a route with tick_interval, run in the worker (see kbridge.listener.steps.tick).

The listener sends one when an assigned partition got no message for tick_interval. Like
kbridge.perform, its arguments come from whoever can write to the broker, so they are
checked: the route must be routed here and ask for ticks, and the topic must be one it
consumes. A refused tick never runs; it goes whole to '<client_id>.unroutable'. A tick is
not retried and not dead-lettered (it carries no message); the next one follows anyway.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kafka import TopicPartition

from ...errors import UnknownRouteError, WireError
from ...params import ParamsBatch
from ...perform import Job
from .task import HARD_LIMIT_GRACE, TaskRefused, worker_runtime

if TYPE_CHECKING:
    from celery import Celery

    from ...app import KBridge
    from ...routing.route import Route
    from ...runtime import Runtime

TICK_TASK = "kbridge.tick"

log = logging.getLogger("kbridge.worker")


def register_tick_task(celery_app: Celery, kbridge_app: KBridge) -> Any:
    @celery_app.task(name=TICK_TASK, bind=True, shared=False, serializer="json", max_retries=0,
                     throws=(TaskRefused,))  # a refusal is an outcome: FAILURE in Celery and Flower, no traceback
    def tick(task: Any, *args: Any, **kwargs: Any) -> None:
        runtime = worker_runtime(kbridge_app)
        try:
            route, tp = tick_request(runtime, args, kwargs)
        except (UnknownRouteError, WireError) as exc:
            task_id = getattr(task.request, "id", None)
            log.error("refused task %s: %s", task_id, exc)
            body = {"task": TICK_TASK, "id": task_id, "args": list(args), "kwargs": kwargs}
            where = runtime.dead_letters.send_unroutable(body, exc, task_id)
            raise TaskRefused(f"{type(exc).__name__}: {exc}; the tick never ran, its body is in {where}") from None
        error = runtime.runner(enforce_timeout=False).tick(Job(route, ParamsBatch([]), tick=tp))
        if error is not None:
            log.warning("tick() of %s %s-%d failed: %s: %s", route.shadow, tp.topic, tp.partition,
                        type(error).__name__, error)

    return tick


def tick_request(runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Route, TopicPartition]:
    """The route and partition a kbridge.tick task names, checked, or WireError / UnknownRouteError."""
    if kwargs or len(args) != 3:
        raise WireError(f"expected 3 arguments (route id, topic, partition) and no keywords, got {len(args)} "
                        f"and {sorted(kwargs)}")
    route_id, topic, partition = args
    if not isinstance(route_id, str) or not isinstance(topic, str):
        raise WireError("route id and topic must be strings")
    if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
        raise WireError(f"partition must be an integer >= 0, got {partition!r}")
    route = runtime.routes.find(route_id)
    if route.tick_interval is None:
        raise WireError(f"route {route_id!r} has no tick_interval; it takes no ticks")
    mapper = runtime.settings.topic_mapper
    name = mapper.incoming(topic)
    if not route.matches(name) or mapper.outgoing(name) != topic:
        raise WireError(f"topic {topic!r} is not one route {route_id!r} consumes")
    return route, TopicPartition(topic, partition)


def send_tick(celery_app: Celery, route: Route, tp: TopicPartition) -> None:
    """The listener's half: one kbridge.tick task on the route's queue."""
    celery_app.send_task(
        TICK_TASK, args=[route.route_id, tp.topic, tp.partition], queue=route.queue,
        shadow=f"{route.shadow} tick", serializer="json",
        soft_time_limit=route.timeout, time_limit=route.timeout + HARD_LIMIT_GRACE, retry=False,
    )
