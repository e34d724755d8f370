"""The worker's `process <topic>` span around perform(), child of the listener's span (only when tracing is on).

The parent is the trace context the hand-over carried (a Celery task's message headers);
without one, the context in the message's own Kafka headers, so a retry published by
Celery or a task from an older listener still joins the producer's trace. A batch links
every message's context. Spans started inside perform() are children of this one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from ..instrumentation import tracing
from ..params import carried
from .job import Job
from .stage import Stage


class TracingStage(Stage):
    def __init__(self) -> None:
        self.tracer = tracing.tracer()

    def around(self, job: Job) -> AbstractContextManager[object]:
        return self._span(job)

    @contextmanager
    def _span(self, job: Job) -> Iterator[None]:
        from opentelemetry import trace

        route, messages = job.route, job.batch
        first = messages[0]
        single = len(messages) == 1 and not route.batch_consuming
        carrier = carried(first)
        parent = tracing.carrier_context(carrier)
        if parent is None and single:
            parent = tracing.message_context(first)
        attributes = {**tracing.attributes(route, messages, "process"), "kbridge.attempt": job.attempt}
        task_id = (carrier or {}).get(tracing.TASK_ID)
        if task_id is not None:
            attributes["messaging.message.id"] = task_id
            attributes["kbridge.celery.task_id"] = task_id
        with self.tracer.start_as_current_span(
            f"process {first.topic}", context=parent, kind=trace.SpanKind.CONSUMER,
            links=None if single else tracing.links(messages), attributes=attributes,
        ):
            yield


def tracing_stages() -> list[Stage]:
    """[TracingStage()] when tracing is on in this process, else nothing (and nothing imported)."""
    return [TracingStage()] if tracing.enabled() else []
