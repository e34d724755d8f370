"""The one Celery task, kbridge.perform, registered on the user's own Celery app.

It only ever runs consumers routed in this process's app: the route id on the
wire is looked up, never trusted as an import path. Task data comes from whoever can
write to the Celery broker, so it is validated strictly; a task that cannot be
trusted (an unknown route, wrong shapes) never runs and goes whole to the app's one
fixed topic, '<client_id>.unroutable', never to a topic it names itself.

Failures follow the perform runner's policy with Celery's own retry (the attempt
count is the task's `retries` header). After the last attempt the messages are
dead-lettered and the task acked. If Kafka does not take a letter, the task is retried
carrying `dead_letter` (why and how far it got), and that retry only dead-letters:
perform() never runs again. A hard time limit requeues the message
(acks_on_timeout=False) rather than dropping it.

What Celery reports is true: a task whose messages were dead-lettered, or that was refused,
ends in Celery's FAILURE state with MessageDeadLettered or TaskRefused (a task-failed event
for Flower and `celery events`, the exception in a result backend), never SUCCESS. Both are
expected failures (the task's `throws`): logged at INFO without a traceback, and the
message is acked or dropped as every failed task's is, never requeued, so it does not run again.
Retries on the way are Celery's own RETRY states.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING, Any, NoReturn

from celery.exceptions import Reject
from celery.signals import worker_process_shutdown

from ...dlq import Failure
from ...errors import UnknownRouteError, WireError
from ...instrumentation.tracing import task_carrier
from ...interchange import from_wire
from ...params import ParamsBatch
from ...perform import DeadLettered, DeadLetterPending, Job, Retry, backoff
from ...runtime import Runtime
from . import ledger

if TYPE_CHECKING:
    from celery import Celery

    from ...app import KBridge
    from ...routing.route import Route

TASK_NAME = "kbridge.perform"
HARD_LIMIT_GRACE = 10.0  # seconds between the soft limit (after_failure runs) and the hard kill
DEAD_LETTER_RETRY_BACKOFF = 5.0  # first wait before trying a dead letter Kafka did not take again
DEAD_LETTER_RETRY_BACKOFF_MAX = 300.0
RESUME_KWARG = "dead_letter"

log = logging.getLogger("kbridge.worker")


class MessageDeadLettered(Exception):
    """The task's outcome when perform() gave up: its messages are in the dead-letter topic."""


class TaskRefused(Exception):
    """The task's outcome when it could not be trusted: it never ran, its body is in '<client_id>.unroutable'."""


_runtimes: weakref.WeakKeyDictionary[KBridge, Runtime] = weakref.WeakKeyDictionary()


def worker_runtime(kbridge_app: KBridge) -> Runtime:
    """This worker process's runtime: built on the first task after the pool forked, and again if the app
    was configured anew (a framework integration rebinding it)."""
    runtime = _runtimes.get(kbridge_app)
    if runtime is None or runtime.pid != os.getpid() or runtime.settings is not kbridge_app.settings:
        runtime = _runtimes[kbridge_app] = Runtime.of(kbridge_app)
    return runtime


def use_runtime(kbridge_app: KBridge, runtime: Runtime) -> Runtime:
    """Run this process's tasks of kbridge_app in runtime, e.g. one with a stand-in dead-letter sink in tests."""
    _runtimes[kbridge_app] = runtime
    return runtime


def register_task(celery_app: Celery, kbridge_app: KBridge) -> Any:
    @celery_app.task(
        name=TASK_NAME,
        bind=True,
        shared=False,  # each Celery app runs the routes of the KBridge app bound to it, not another's
        acks_late=True,
        reject_on_worker_lost=True,
        acks_on_timeout=False,
        serializer="json",
        # kbridge's policy decides when to stop retrying (a dead letter is retried until Kafka takes
        # it); Celery's own cap of 3 would drop the task on its 4th retry.
        max_retries=None,
        throws=(MessageDeadLettered, TaskRefused),  # outcomes, not crashes: no traceback in the worker's log
    )
    def perform(task: Any, *args: Any, **kwargs: Any) -> None:
        try:
            run_task(task, worker_runtime(kbridge_app), args, kwargs)
        finally:
            # This message is done with, whatever happened: performed, dead-lettered, refused, or
            # handed to Celery's retry as a new message. Only a killed process skips this; then
            # Celery requeues the same message and the entry stays open for it.
            _clear_ledger(task, args)

    @worker_process_shutdown.connect(weak=False)
    def _close_producer(**_: Any) -> None:
        for (pid, _url), closer in list(_closers.items()):
            if pid == os.getpid():
                closer.flush()
        try:
            kbridge_app.producer.close()  # flushes what produce_async() and async responder topics buffered
        finally:
            runtime = _runtimes.get(kbridge_app)
            if runtime is not None and runtime.pid == os.getpid():
                runtime.close()

    return perform


class TaskRequest:
    """A task's arguments, validated: the route it names and the messages it carries, or why not."""

    def __init__(self, runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if len(args) != 2:
            raise WireError(f"expected 2 arguments (route id, messages), got {len(args)}")
        route_id, messages = args
        if not isinstance(route_id, str):
            raise WireError(f"route id must be a string, got {type(route_id).__name__}")
        unknown = sorted(set(kwargs) - {RESUME_KWARG}) if kwargs else ()
        if unknown:
            raise WireError(f"unknown keyword argument(s) {', '.join(map(repr, unknown))}")
        self.route: Route = runtime.routes.find(route_id)
        if not isinstance(messages, list) or not messages:
            raise WireError(f"messages must be a non-empty list, got {str(messages)[:80]!r}")
        if not self.route.batch_consuming and len(messages) > (self.route.pack or 1):
            takes = f"at most {self.route.pack} message(s)" if self.route.pack else "one message"
            raise WireError(f"route {route_id!r} takes {takes} per task, got {len(messages)}")
        if self.route.max_batch_size is not None and len(messages) > self.route.max_batch_size:
            raise WireError(f"route {route_id!r} takes at most {self.route.max_batch_size} messages per task "
                            f"(max_batch_size), got {len(messages)}")
        rebuilt = [from_wire(m, self.route.deserializer) for m in messages]
        first = rebuilt[0]
        expected = runtime.settings.topic_mapper.outgoing(self.route.name)
        if self.route.pattern is not None:  # any one topic the pattern matches, and nothing else
            mapper = runtime.settings.topic_mapper
            name = mapper.incoming(first.topic)
            if not self.route.matches(name) or mapper.outgoing(name) != first.topic:
                raise WireError(f"message {first!r} is not of a topic matching {self.route.pattern.pattern!r}, "
                                f"which route {route_id!r} consumes")
            expected = first.topic
        previous = -1
        for params in rebuilt:
            if params.topic != expected or params.partition != first.partition:
                raise WireError(f"message {params!r} is not of {expected}-{first.partition}, which route "
                                f"{route_id!r} consumes")
            if params.offset <= previous:
                raise WireError("messages of one task must be in increasing offset order")
            previous = params.offset
        batch = ParamsBatch(rebuilt)
        self.batch = batch
        self.resume = _resume(kwargs.get(RESUME_KWARG), len(batch)) if RESUME_KWARG in kwargs else None


def _resume(data: Any, size: int) -> tuple[Failure, int, int, int]:
    """(failure, attempts, sent, tries) of a dead-letter-only retry."""
    fields = {"error_class": str, "message": str, "attempts": int, "sent": int, "tries": int}
    if not isinstance(data, dict) or set(data) != set(fields) or any(
        not isinstance(data[k], t) or isinstance(data[k], bool) for k, t in fields.items()
    ):
        raise WireError(f"{RESUME_KWARG} must be an object of {', '.join(fields)}, got {str(data)[:120]!r}")
    if data["attempts"] < 1 or data["tries"] < 1 or not 0 <= data["sent"] < size:
        raise WireError(f"{RESUME_KWARG} counts out of range: {data!r}")
    return Failure(data["error_class"], data["message"]), data["attempts"], data["sent"], data["tries"]


class CeleryScheduler:
    """Next attempts are Celery retries: a new message with a countdown, this one acked."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def perform_again(self, job: Job, retry: Retry) -> None:
        retry_task(self.task, exc=retry.error, countdown=retry.countdown)

    def dead_letter_again(self, job: Job, pending: DeadLetterPending) -> None:
        countdown, resume = dead_letter_retry(job, pending)
        retry_task(self.task, exc=pending.cause, countdown=countdown, kwargs={RESUME_KWARG: resume})


def dead_letter_retry(job: Job, pending: DeadLetterPending) -> tuple[float, dict[str, Any]]:
    """(countdown, the resume kwarg) of a dead-letter-only retry."""
    countdown = backoff(DEAD_LETTER_RETRY_BACKOFF, DEAD_LETTER_RETRY_BACKOFF_MAX, pending.tries - 1)
    log.error("dead letters of %s wait for Kafka: retrying only the dead-letter step in %.1fs (try %d)",
              job, countdown, pending.tries + 1)
    resume = {**pending.failure.to_wire(), "attempts": pending.attempts, "sent": pending.sent,
              "tries": pending.tries + 1}
    return countdown, resume


def retry_task(task: Any, **options: Any) -> NoReturn:
    """Celery's retry: a new message with a countdown, this one acked. Never returns.

    When the new message cannot be published (the broker blipped), Celery raises
    Reject(requeue=False), which would drop this acks_late message; it is requeued instead,
    so it runs again rather than not at all.
    """
    try:
        raise task.retry(max_retries=None, **options)
    except Reject as exc:
        log.error("could not publish the retry of task %s (%s); requeueing it instead",
                  getattr(task.request, "id", None), exc.reason)
        raise Reject(exc.reason, requeue=True) from exc


def run_task(task: Any, runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        request = TaskRequest(runtime, args, kwargs)
    except (UnknownRouteError, WireError) as exc:
        _refuse(task, runtime, args, kwargs, exc)
    if request.route.pack is not None:
        from .pack import run_pack

        return run_pack(task, runtime, request, args, kwargs)
    request.batch[0].carrier = task_carrier(task.request)  # trace context from the task message's headers
    runner = runtime.runner(enforce_timeout=False)  # Celery enforces the soft and hard limits
    scheduler = CeleryScheduler(task)
    job = Job(request.route, request.batch, attempt=(task.request.retries or 0) + 1, delivery=task.request)
    if request.resume is None:
        outcome = runner.run(job, scheduler)
    else:
        failure, attempts, sent, tries = request.resume
        outcome = runner.resume_dead_letter(job, failure, attempts, sent, tries, scheduler)
    if isinstance(outcome, DeadLettered):
        first = request.batch[0]
        raise MessageDeadLettered(
            f"{len(request.batch)} message(s) from {first.topic}-{first.partition}@{first.offset} dead-lettered to "
            f"{request.route.dead_letter_topic} after {outcome.attempts} attempt(s): {outcome.failure}"
        )


def _refuse(task: Any, runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any],
            error: Exception) -> NoReturn:
    """An untrusted task never runs: it goes whole to '<client_id>.unroutable', retried until Kafka takes it."""
    task_id = getattr(task.request, "id", None)
    log.error("refused task %s: %s", task_id, error)
    body = {"task": TASK_NAME, "id": task_id, "args": list(args), "kwargs": kwargs}
    try:
        where = runtime.dead_letters.send_unroutable(body, error, task_id)
    except Exception as exc:
        tries = (task.request.retries or 0)
        countdown = backoff(DEAD_LETTER_RETRY_BACKOFF, DEAD_LETTER_RETRY_BACKOFF_MAX, tries)
        log.error("could not write refused task %s to the unroutable topic: %s: %s; retrying in %.1fs",
                  task_id, type(exc).__name__, exc, countdown)
        retry_task(task, exc=exc, countdown=countdown)
    raise TaskRefused(f"{type(error).__name__}: {error}; the task never ran, its body is in {where}")


_closers: dict[tuple[int, str], ledger.Closer] = {}


def _ledger_closer(url: str) -> ledger.Closer:
    key = (os.getpid(), url)  # one per process: a forked child builds its own
    if key not in _closers:
        _closers[key] = ledger.Closer(url)
    return _closers[key]


def _clear_ledger(task: Any, args: tuple[Any, ...]) -> None:
    """Close the task's ledger entry (Redis fast path only), batched off the task's own time."""
    queue = getattr(task.request, ledger.HEADER, None)
    entry = ledger.entry_of_task(task.request.id, args) if queue else None
    if queue and entry is not None:
        _ledger_closer(task.app.conf.broker_url).close_entry(str(queue), entry)
