"""The dead-letter step: when the policy gives up, every message of the job goes to the route's dead-letter topic.

Kafka must acknowledge each letter. When it does not, the outcome says how many it
took, so only the dead-letter step is tried again, never perform().
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ..dlq import Failure
from ..params import Params
from .job import DeadLettered, DeadLetterPending, Job, Outcome
from .stage import Stage

log = logging.getLogger("kbridge.perform")


class DeadLetterSink(Protocol):
    """kbridge.dlq.DeadLetters, or TestClient's in-memory capture."""

    def send(self, topic: str, params: Params, error: BaseException | Failure, attempts: int,
             group_id: str) -> None: ...

    def send_unroutable(self, body: dict[str, Any], error: BaseException | Failure, task_id: str | None) -> str:
        """A task that cannot be trusted, whole, to '<client_id>.unroutable'; where it went."""


class DeadLetterStage(Stage):
    def __init__(self, sink: DeadLetterSink) -> None:
        self.sink = sink

    def on_failure(self, job: Job, error: BaseException) -> Outcome:
        return self.send(job, error, job.attempt)

    def send(self, job: Job, error: BaseException | Failure, attempts: int, sent: int = 0, tries: int = 1) -> Outcome:
        """Letters for the messages from index sent on; DeadLetterPending if Kafka did not take one."""
        route = job.route
        for index in range(sent, len(job.batch)):
            params = job.batch[index]
            try:
                self.sink.send(route.dead_letter_topic, params, error, attempts, route.group_id)
            except Exception as exc:
                log.error(
                    "could not dead-letter %s-%d@%d to %s (try %d): %s: %s; perform() will not run again, "
                    "only the dead letter is retried until Kafka takes it",
                    params.topic, params.partition, params.offset, route.dead_letter_topic, tries,
                    type(exc).__name__, exc,
                )
                return DeadLetterPending(Failure.of(error), attempts, index, exc, tries)
        return DeadLettered(Failure.of(error), attempts)
