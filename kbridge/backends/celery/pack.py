"""The worker's half of pack=N: each message of a packed task is its own perform() job.

Every message goes through the perform runner on its own, with every stage (after_failure,
retry policy, dead letter, and any per-message stage a route adds), and with the topic's
timeout enforced per message. A message that fails is not retried inside the pack: its next
attempt, or its dead-letter-only retry, is published as a task of its own, carrying its own
attempt count, before the pack returns and is acked. The other messages count as done.

If the worker dies mid-pack, Celery delivers the whole pack again (acks_late): messages
already performed run again, at least once as promised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery.exceptions import Reject

from ...errors import WireError
from ...instrumentation.tracing import task_carrier
from ...params import ParamsBatch
from ...perform import DeadLettered, DeadLetterPending, Job, PerformRunner, Retry, build_runner
from ...perform.gates import gate_stages
from .pack_timeout import PackTimeLimitStage
from .task import HARD_LIMIT_GRACE, RESUME_KWARG, MessageDeadLettered, TaskRequest, _refuse, dead_letter_retry

if TYPE_CHECKING:
    from ...runtime import Runtime

log = logging.getLogger("kbridge.worker")


_runners: dict[int, tuple[Runtime, PerformRunner]] = {}


def _pack_runner(runtime: Runtime) -> PerformRunner:
    """The runtime's stages with the timeout per message (Celery's limits cover the whole pack), built once."""
    cached = _runners.get(id(runtime))
    if cached is None or cached[0] is not runtime:
        runner = build_runner(runtime.dead_letters, monitor=runtime.monitor, hooks=runtime.perform_hooks,
                              producer=runtime.producer, enforce_timeout=False,
                              extra=[PackTimeLimitStage(), *gate_stages(runtime)])
        cached = _runners[id(runtime)] = (runtime, runner)
    return cached[1]


class HandedOff(Exception):
    """This message's next step now travels as a task of its own; the pack goes on with the next message."""


@dataclass(frozen=True)
class PackedDelivery:
    """One message's delivery inside a pack, for per-message stages (skip_duplicates' claim owner).

    Its id stays the same when the pack is redelivered, and it is the task id of the message's own
    next attempt, so a claim taken inside the pack is the claim of that task too."""

    id: str


def delivery_of(task_id: str, messages: int, offset: int) -> PackedDelivery:
    return PackedDelivery(task_id if messages == 1 else f"{task_id}-{offset}")


class PackScheduler:
    """Next attempts of one packed message are new tasks with just that message."""

    def __init__(self, task: Any, message: Any) -> None:
        self.task, self.message = task, message

    def perform_again(self, job: Job, retry: Retry) -> None:
        self._alone(job, retry.countdown, job.attempt, None, retry.error)

    def dead_letter_again(self, job: Job, pending: DeadLetterPending) -> None:
        countdown, resume = dead_letter_retry(job, pending)
        self._alone(job, countdown, job.attempt, {RESUME_KWARG: resume}, pending.cause)

    def _alone(self, job: Job, countdown: float, retries: int, kwargs: dict[str, Any] | None,
               cause: BaseException) -> None:
        """Publish this message as its own task; if the broker does not take it, the whole pack is requeued
        (running again rather than not at all)."""
        route = job.route
        try:
            self.task.apply_async(
                args=[route.route_id, [self.message]], kwargs=kwargs or {}, countdown=countdown, retries=retries,
                task_id=job.delivery.id if isinstance(job.delivery, PackedDelivery) else None,
                queue=(self.task.request.delivery_info or {}).get("routing_key") or route.queue,
                shadow=route.shadow, serializer="json", time_limit=route.timeout + HARD_LIMIT_GRACE,
                soft_time_limit=route.timeout, retry=False,
            )
        except Exception as exc:
            log.error("could not publish the next attempt of %s alone (%s: %s); requeueing its whole pack",
                      job, type(exc).__name__, exc)
            raise Reject(f"next attempt of {job} not published: {exc}", requeue=True) from exc
        log.info("%s failed (%s: %s): its next step runs as a task of its own in %.1fs",
                 job, type(cause).__name__, cause, countdown)
        raise HandedOff


def run_pack(task: Any, runtime: Runtime, request: TaskRequest, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> None:
    """perform() once per message, in offset order, each with its own failure handling."""
    messages: Sequence[Any] = args[1]
    if request.resume is not None and len(request.batch) != 1:
        error = WireError(f"{RESUME_KWARG} retries one message of a pack, got {len(request.batch)}")
        _refuse(task, runtime, args, kwargs, error)
    runner = _pack_runner(runtime)
    attempt = (task.request.retries or 0) + 1
    carrier = task_carrier(task.request)  # the trace context of the task message's headers
    dead: list[tuple[int, DeadLettered]] = []
    for params, message in zip(request.batch, messages, strict=True):
        params.carrier = carrier
        delivery = delivery_of(task.request.id, len(messages), params.offset)
        job = Job(request.route, ParamsBatch([params]), attempt=attempt, delivery=delivery)
        scheduler = PackScheduler(task, message)
        try:
            if request.resume is None:
                outcome = runner.run(job, scheduler)
            else:
                failure, attempts, sent, tries = request.resume
                outcome = runner.resume_dead_letter(job, failure, attempts, sent, tries, scheduler)
        except HandedOff:
            continue
        if isinstance(outcome, DeadLettered):
            dead.append((params.offset, outcome))
    if dead:  # Celery reports the task as failed, as for a task of one message (the rest was performed)
        first = request.batch[0]
        offsets = ", ".join(str(offset) for offset, _ in dead)
        raise MessageDeadLettered(
            f"{len(dead)} of {len(request.batch)} message(s) from {first.topic}-{first.partition} dead-lettered to "
            f"{request.route.dead_letter_topic} (offsets {offsets}): {dead[0][1].failure}"
        )
