"""One perform() job and what can become of it.

A job is one run of a consumer over one message or batch, at a given attempt. The
runner turns an attempt into an outcome; whoever runs the job (a Celery task, the
inline backend, TestClient) decides only how to wait before the next attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kafka import TopicPartition

from ..dlq import Failure
from ..params import ParamsBatch

if TYPE_CHECKING:
    from ..consumer import BaseConsumer
    from ..routing.route import Route


@dataclass
class Job:
    route: Route
    batch: ParamsBatch
    attempt: int = 1  # 1-based: the perform() run this is
    consumer: BaseConsumer | None = field(default=None, compare=False)  # the instance of this attempt
    tick: TopicPartition | None = None  # a tick() job (tick_interval) of this partition; its batch is empty

    def next_attempt(self) -> Job:
        return replace(self, attempt=self.attempt + 1, consumer=None)

    def where(self) -> dict[str, Any]:
        """route, group_id, topic, partition, offset (of the first message) and messages: every event's payload."""
        if self.tick is not None:
            return {"route": self.route.route_id, "group_id": self.route.group_id, "topic": self.tick.topic,
                    "partition": self.tick.partition, "offset": -1, "messages": 0}
        first = self.batch[0]
        return {"route": self.route.route_id, "group_id": self.route.group_id, "topic": first.topic,
                "partition": first.partition, "offset": first.offset, "messages": len(self.batch)}

    def __str__(self) -> str:
        if self.tick is not None:
            return f"{self.route.shadow} tick of {self.tick.topic}-{self.tick.partition}"
        first = self.batch[0]
        return f"{self.route.shadow} {first.topic}-{first.partition}@{first.offset}"


@dataclass(frozen=True)
class Performed:
    attempts: int


@dataclass(frozen=True)
class Retry:
    """Run perform() again after countdown seconds."""

    error: BaseException
    countdown: float


@dataclass(frozen=True)
class DeadLettered:
    failure: Failure
    attempts: int


@dataclass(frozen=True)
class DeadLetterPending:
    """perform() gave up, but Kafka did not take every dead letter yet: only the dead-letter step is retried.

    sent counts the leading messages of the batch whose letters Kafka already acknowledged.
    """

    failure: Failure
    attempts: int
    sent: int
    cause: BaseException
    tries: int = 1  # dead-letter tries so far, for the backoff


Outcome = Performed | Retry | DeadLettered | DeadLetterPending
