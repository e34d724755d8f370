"""tracing: a `receive <topic>` span per perform() run about to be handed over (only when tracing is on).

It sits between unit and hand over. A run of one message continues the trace in that
message's headers (or starts one); a batch run links every message's context. The span's
own context goes into the run's first message's carrier, which the backend sends in the
task message's headers, so the worker's span is its child. Spans end once the hand-over
returns (confirmed) or holds.
"""

from __future__ import annotations

from typing import Any

from ...instrumentation import tracing
from .step import Hold, PartitionBatch, Step


class TracingStep(Step):
    def __init__(self) -> None:
        super().__init__()
        self.tracer = tracing.tracer()

    def submit(self, batch: PartitionBatch) -> None:
        from opentelemetry import trace

        assert batch.handovers is not None, "the tracing step comes after the unit step"
        route = batch.route
        spans: list[Any] = []
        try:
            for call in batch.handovers:
                for unit in route.units(call):
                    single = len(unit) == 1 and not route.batch_consuming
                    span = self.tracer.start_span(
                        f"receive {unit[0].topic}", kind=trace.SpanKind.CONSUMER,
                        context=tracing.message_context(unit[0]) if single else None,
                        links=None if single else tracing.links(unit),
                        attributes=tracing.attributes(route, unit, "receive"),
                    )
                    unit[0].carrier = tracing.carrier_of(span)
                    spans.append(span)
            self.forward(batch)
        except Hold as hold:
            for span in spans:
                span.add_event("kbridge.hold", {"reason": hold.reason[:300]})
            raise
        finally:
            for span in spans:
                span.end()


def tracing_steps() -> list[Step]:
    """[TracingStep()] when tracing is on in this process, else nothing (and nothing imported)."""
    return [TracingStep()] if tracing.enabled() else []
