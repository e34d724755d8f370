"""perform() in one runner of ordered stages, shared by the Celery task, the inline backend and TestClient.

The order, outermost first:

1. InstrumentationStage: perform.started / .finished / .failed events;
2. ContextStage: framework and user perform hooks (an app context, DB connection hygiene);
3. ReentrancyStage: after_failure(exc) on any failure;
4. TimeLimitStage: the topic's timeout (inline and TestClient; Celery enforces its own);
5. RetryStage: retry with backoff up to max_retries;
6. DeadLetterStage: the dead-letter topic, retried alone until Kafka takes it.
"""

from .assembly import build_runner
from .context import ContextStage, PerformHook
from .dead_letter import DeadLetterSink, DeadLetterStage
from .instrumentation import InstrumentationStage
from .job import DeadLettered, DeadLetterPending, Job, Outcome, Performed, Retry
from .reentrancy import ReentrancyStage, calling_after_failure
from .retry import RetryStage, backoff, should_retry
from .runner import PerformRunner, Scheduler
from .stage import Stage
from .time_limit import TimeLimitStage

__all__ = [
    "ContextStage", "DeadLetterPending", "DeadLetterSink", "DeadLetterStage", "DeadLettered", "InstrumentationStage",
    "Job", "Outcome", "PerformHook", "PerformRunner", "Performed", "ReentrancyStage", "Retry", "RetryStage",
    "Scheduler", "Stage", "TimeLimitStage", "backoff", "build_runner", "calling_after_failure", "should_retry",
]
