"""The one Celery task, kbridge.perform, registered on the user's own Celery app.

It only ever runs consumers routed in this process's app: the route id on the
wire is looked up, never trusted as an import path. A task naming an unknown
route is refused and its messages dead-lettered.

Failures follow glass's policy with Celery's own retry (the attempt count is the
task's `retries` header). After the last attempt the messages are dead-lettered
and the task acked. A hard time limit requeues the message (acks_on_timeout=False)
rather than dropping it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery.signals import worker_process_shutdown

from . import glass
from .backends import ledger
from .errors import UnknownRouteError
from .interchange import from_wire
from .params import Params, ParamsBatch

if TYPE_CHECKING:
    from celery import Celery

    from .app import KBridge

TASK_NAME = "kbridge.perform"
HARD_LIMIT_GRACE = 10.0  # seconds between the soft limit (after_failure runs) and the hard kill
DEAD_LETTER_RETRY_BACKOFF = 5.0

log = logging.getLogger("kbridge.worker")


def register_task(celery_app: Celery, kbridge_app: KBridge) -> Any:
    @celery_app.task(
        name=TASK_NAME,
        bind=True,
        shared=False,  # each Celery app runs the routes of the KBridge app bound to it, not another's
        acks_late=True,
        reject_on_worker_lost=True,
        acks_on_timeout=False,
        serializer="json",
    )
    def perform(task: Any, route_id: str, messages: list[dict[str, Any]]) -> None:
        try:
            _run(task, kbridge_app, route_id, messages)
        finally:
            # This message is done with, whatever happened: performed, dead-lettered, refused, or
            # handed to Celery's retry as a new message. Only a killed process skips this; then
            # Celery requeues the same message and the entry stays open for it.
            _clear_ledger(task)

    @worker_process_shutdown.connect(weak=False)
    def _close_producer(**_: Any) -> None:
        for (pid, _url), closer in list(_closers.items()):
            if pid == os.getpid():
                closer.flush()
        try:
            kbridge_app.producer.close()  # flushes what produce_async() and async responder topics buffered
        finally:
            kbridge_app.dead_letters.close()

    return perform


def _run(task: Any, kbridge_app: KBridge, route_id: str, messages: list[dict[str, Any]]) -> None:
    retries: int = task.request.retries or 0
    try:
        route = kbridge_app.routes.find(route_id)
    except UnknownRouteError as exc:
        log.error("refused task %s: %s", task.request.id, exc)
        batch = ParamsBatch([from_wire(m) for m in messages])
        _dead_letter(task, kbridge_app, batch, exc, retries + 1, unknown_route_dlq(kbridge_app), "unknown")
        return
    batch = ParamsBatch([from_wire(m, route.deserializer) for m in messages])
    monitor = kbridge_app.monitor
    try:
        glass.perform(route, batch, kbridge_app.perform_hooks, monitor, retries + 1)
        return
    except Exception as exc:
        if glass.should_retry(route, exc, retries):
            countdown = glass.backoff(route, retries)
            log.warning(
                "%s attempt %d/%d failed: %s: %s; retrying in %.1fs",
                route.shadow, retries + 1, route.max_retries + 1, type(exc).__name__, exc, countdown,
            )
            monitor.instrument("retry", **glass.where_payload(route, batch), attempt=retries + 1, countdown=countdown)
            raise task.retry(exc=exc, countdown=countdown, max_retries=None) from exc
        failure = exc
    _dead_letter(task, kbridge_app, batch, failure, retries + 1, lambda p: route.dead_letter_topic, route.group_id)


def unknown_route_dlq(kbridge_app: KBridge) -> Callable[[Params], str]:
    """'<topic>.dlq' for a message of no route; params.topic is the Kafka name, so map it back first."""
    mapper = kbridge_app.settings.topic_mapper
    return lambda p: f"{mapper.incoming(p.topic)}.dlq"


_closers: dict[tuple[int, str], ledger.Closer] = {}


def _ledger_closer(url: str) -> ledger.Closer:
    key = (os.getpid(), url)  # one per process: a forked child builds its own
    if key not in _closers:
        _closers[key] = ledger.Closer(url)
    return _closers[key]


def _clear_ledger(task: Any) -> None:
    """Close the task's ledger entry (Redis fast path only), batched off the task's own time."""
    queue = getattr(task.request, ledger.HEADER, None)
    if queue:
        _ledger_closer(task.app.conf.broker_url).close_entry(queue, task.request.id)


def _dead_letter(
    task: Any,
    kbridge_app: KBridge,
    batch: ParamsBatch,
    error: BaseException,
    attempts: int,
    topic_for: Callable[[Params], str],
    group_id: str,
) -> None:
    """Dead-letter every message; if Kafka does not take them, retry the task rather than ack it."""
    try:
        for params in batch:
            kbridge_app.dead_letters.send(topic_for(params), params, error, attempts, group_id)
    except Exception as exc:
        log.error("could not dead-letter %s: %s: %s; retrying the task", batch, type(exc).__name__, exc)
        raise task.retry(exc=exc, countdown=DEAD_LETTER_RETRY_BACKOFF, max_retries=None) from exc
