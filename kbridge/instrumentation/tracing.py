"""OpenTelemetry tracing: a message's W3C trace context continues through the listener into perform().

- A Kafka message's `traceparent`/`tracestate` headers are the parent of the listener's
  `receive <topic>` span (a message without them starts a new trace).
- That span's context travels in the hand-over's transport headers (the Celery task
  message's headers, never its arguments) and is the parent of the worker's
  `process <topic>` span around perform(), so spans a user starts in perform() are
  children of the producer's trace. A batch task links every message's own context.
- produce() and responders put the current context into the headers they send.

Tracing is on in a process when opentelemetry-api is installed and a tracer provider has
been set (the SDK's, say) before the listener or the worker starts; KBRIDGE_TRACING=off
turns it off anyway. When it is off, the listener step and the perform stage are not
assembled, and opentelemetry is never imported.

Attributes follow OpenTelemetry's messaging semantic conventions.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span

    from ..params import Params
    from ..routing.route import Route

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
TASK_ID = "id"  # in a carrier: the Celery task id, read from the task message
MAX_VALUE = 512  # longer trace headers are not W3C ones; a forged task cannot make the worker parse more
SCOPE = "kbridge"
OFF = ("0", "off", "false", "no")

_installed: bool | None = None


def installed() -> bool:
    """Whether opentelemetry-api can be imported; looked up once, without importing it."""
    global _installed
    if _installed is None:
        try:
            _installed = importlib.util.find_spec("opentelemetry.trace") is not None
        except (ImportError, ValueError):
            _installed = False
    return _installed


def enabled() -> bool:
    """Tracing in this process: opentelemetry installed, a real tracer provider set, KBRIDGE_TRACING not off."""
    if os.environ.get("KBRIDGE_TRACING", "").strip().lower() in OFF or not installed():
        return False
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def state() -> str:
    """Whether tracing is on in this process, and if not, why: for `kbridge info`."""
    if os.environ.get("KBRIDGE_TRACING", "").strip().lower() in OFF:
        return "off (KBRIDGE_TRACING=off)"
    if not installed():
        return "off (opentelemetry not installed: pip install 'kbridge[otel]')"
    return "on (OpenTelemetry)" if enabled() else "off (no OpenTelemetry tracer provider set)"


def task_carrier(request: Any) -> dict[str, str] | None:
    """The trace headers and task id of a Celery task's request (its message headers); pure Python."""
    found = {name: value for name in TRACE_HEADERS
             if isinstance(value := getattr(request, name, None), str) and len(value) <= MAX_VALUE}
    if not found:
        return None
    task_id = getattr(request, "id", None)
    if isinstance(task_id, str):
        found[TASK_ID] = task_id
    return found


def outgoing(carrier: Mapping[str, str] | None) -> dict[str, str]:
    """What of a carrier goes into a task message's headers: the trace headers only."""
    if not carrier:
        return {}
    return {k: v for k, v in carrier.items() if k in TRACE_HEADERS}


# -- everything below runs only when tracing is enabled (opentelemetry imported) ---------------------------

def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


class _KafkaHeaders:
    """A propagator getter over a Kafka header list [(name, bytes)], the last value of a name winning."""

    def get(self, carrier: Sequence[tuple[str, bytes | None]], key: str) -> list[str] | None:
        for name, value in reversed(carrier):
            if name == key and value is not None and len(value) <= MAX_VALUE:
                try:
                    return [value.decode("ascii")]
                except UnicodeDecodeError:
                    return None
        return None

    def keys(self, carrier: Sequence[tuple[str, bytes | None]]) -> list[str]:
        return [name for name, _ in carrier]


_KAFKA_GETTER = _KafkaHeaders()


def message_context(params: Params) -> Context | None:
    """The trace context a Kafka message carries in its headers, or None."""
    from opentelemetry import trace

    context = _propagator().extract(params.header_list, getter=_KAFKA_GETTER)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def carrier_context(carrier: Mapping[str, str] | None) -> Context | None:
    """The trace context of a hand-over's carrier, or None."""
    from opentelemetry import trace

    if not carrier:
        return None
    context = _propagator().extract(outgoing(carrier))
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def carrier_of(span: Span) -> dict[str, str]:
    """The W3C headers naming span as the parent."""
    from opentelemetry import trace

    carrier: dict[str, str] = {}
    _propagator().inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def links(messages: Sequence[Params]) -> list[Link]:
    """One link per message of a batch that carries a trace context."""
    from opentelemetry import trace

    found = []
    for params in messages:
        context = message_context(params)
        if context is not None:
            found.append(trace.Link(trace.get_current_span(context).get_span_context(),
                                    {"messaging.kafka.message.offset": params.offset}))
    return found


def attributes(route: Route, messages: Sequence[Params], operation: str) -> dict[str, Any]:
    """Messaging semantic-convention attributes of a span over messages of one partition."""
    first = messages[0]
    found: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": first.topic,
        "messaging.destination.partition.id": str(first.partition),
        "messaging.kafka.destination.partition": first.partition,
        "messaging.kafka.message.offset": first.offset,
        "messaging.consumer.group.name": route.group_id,
        "messaging.kafka.consumer.group": route.group_id,
        "kbridge.route": route.route_id,
        "kbridge.backend": route.backend,
    }
    if len(messages) > 1 or route.batch_consuming:
        found["messaging.batch.message_count"] = len(messages)
    return found


def inject(headers: MutableSequence[tuple[str, bytes]]) -> None:
    """Add the current span's W3C headers to a message about to be produced, unless it names its own."""
    if not installed() or any(name in TRACE_HEADERS for name, _ in headers):
        return
    from opentelemetry import trace

    if not trace.get_current_span().get_span_context().is_valid:
        return
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    headers.extend((name, value.encode("ascii")) for name, value in carrier.items())


def tracer() -> Any:
    from opentelemetry import trace

    from .. import __version__

    return trace.get_tracer(SCOPE, __version__)
