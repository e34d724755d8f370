"""hand over: each call the unit step planned goes to the route's backend, which returns only once it is confirmed.

On topics with automatically_mark_as_consumed=False (inline), perform()'s own
mark_as_consumed() calls go straight to the offset tracker while it runs.

When the backend cannot confirm (the Celery broker is down, say), everything before the
first unconfirmed message goes on to be marked, and the partition is held there (rule 2);
on resume only what was not yet confirmed is handed over again.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext

from kafka import TopicPartition

from ...consumer import collecting_marks
from ...errors import EnqueueError
from ...routing import Route
from .context import StepContext
from .step import PartitionBatch, Step


class HandOverStep(Step):
    def __init__(self, context: StepContext) -> None:
        super().__init__()
        self.context = context

    def submit(self, batch: PartitionBatch) -> None:
        assert batch.handovers is not None, "the hand-over step comes after the unit step"
        if not batch.handovers:
            self.forward(batch)
            return
        ctx, route, tp = self.context, batch.route, batch.tp
        started = time.monotonic()
        handed = 0
        try:
            backend = ctx.runtime.backend(route.backend)  # a plugin that fails to build holds, like a failed enqueue
            with self._manual_marks(route):
                for call in batch.handovers:
                    backend.enqueue(route, call)
                    handed += len(call)
        except Exception as exc:
            everything = [m for call in batch.handovers for m in call]
            confirmed = handed + (exc.confirmed if isinstance(exc, EnqueueError) else 0)
            confirmed = min(confirmed, len(everything) - 1)  # a backend over-reporting never skips ahead
            self._enqueued(tp, confirmed, started)
            stopped_at = everything[confirmed].offset
            reason = f"{type(exc).__name__}: {exc}"
            ctx.monitor.instrument("enqueue.failed", group_id=ctx.group_id, topic=tp.topic, partition=tp.partition,
                                   offset=stopped_at, error=reason)
            raise self.stop_at(batch, stopped_at, reason) from exc
        self._enqueued(tp, handed, started)
        self.forward(batch)

    def _manual_marks(self, route: Route) -> AbstractContextManager[None]:
        if route.automatically_mark_as_consumed:
            return nullcontext()
        offsets = self.context.offsets
        return collecting_marks(lambda p: offsets.mark(TopicPartition(p.topic, p.partition), p.offset))

    def _enqueued(self, tp: TopicPartition, count: int, started: float) -> None:
        ctx = self.context
        ctx.stats.enqueued += count
        if count and ctx.monitor.listens("enqueue"):
            ctx.monitor.instrument("enqueue", group_id=ctx.group_id, topic=tp.topic, partition=tp.partition,
                                   messages=count, seconds=time.monotonic() - started)
