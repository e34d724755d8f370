"""The standard stage order, assembled once per process by whoever runs jobs there."""

from __future__ import annotations

from collections.abc import Sequence

from ..instrumentation import Monitor
from ..producer import Producer
from .context import ContextStage, PerformHook
from .dead_letter import DeadLetterSink, DeadLetterStage
from .instrumentation import InstrumentationStage
from .producing import ProducingStage
from .reentrancy import ReentrancyStage
from .retry import RetryStage
from .runner import PerformRunner
from .stage import Stage
from .time_limit import TimeLimitStage
from .tracing import tracing_stages


def build_runner(
    sink: DeadLetterSink,
    *,
    monitor: Monitor | None = None,
    hooks: Sequence[PerformHook] = (),
    producer: Producer | None = None,
    enforce_timeout: bool,
    extra: Sequence[Stage] = (),
) -> PerformRunner:
    """producer: what respond_with() and produce() use inside perform().
    enforce_timeout: False where Celery enforces the topic's time limits itself. extra: stages placed
    after the time limit and before the retry policy (they see each attempt's outcome first)."""
    stages: list[Stage] = tracing_stages()
    if monitor is not None:
        stages.append(InstrumentationStage(monitor))
    if producer is not None:
        stages.append(ProducingStage(producer))
    stages += [ContextStage(hooks), ReentrancyStage()]
    if enforce_timeout:
        stages.append(TimeLimitStage())
    stages += [*extra, RetryStage(monitor), DeadLetterStage(sink)]
    return PerformRunner(stages)
