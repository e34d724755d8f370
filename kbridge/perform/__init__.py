"""perform() in one runner of ordered stages, shared by the Celery task, the inline backend and TestClient.

The order, outermost first:

1. InstrumentationStage: perform.started / .finished / .failed events;
2. ProducingStage: respond_with() and produce() send through the runtime's producer;
3. ContextStage: framework and user perform hooks (an app context, DB connection hygiene);
4. ReentrancyStage: after_failure(exc) on any failure;
5. TimeLimitStage: the topic's timeout (inline and TestClient; Celery enforces its own);
6. RetryStage: retry with backoff up to max_retries;
7. DeadLetterStage: the dead-letter topic, retried alone until Kafka takes it.

Routes that set ordering or skip_duplicates add gates (gates.py) whose before() may settle
a job as Skipped without perform(): the ordering gate, then the duplicate skip.
"""

from .assembly import build_runner
from .context import ContextStage, PerformHook
from .dead_letter import DeadLetterSink, DeadLetterStage
from .instrumentation import InstrumentationStage
from .job import DeadLettered, DeadLetterPending, Job, Outcome, Performed, Retry, Skipped
from .producing import ProducingStage
from .reentrancy import ReentrancyStage, calling_after_failure
from .retry import RetryStage, backoff, should_retry
from .runner import PerformRunner, Scheduler
from .stage import Stage
from .time_limit import TimeLimitStage

__all__ = [
    "ContextStage", "DeadLetterPending", "DeadLetterSink", "DeadLetterStage", "DeadLettered", "InstrumentationStage",
    "Job", "Outcome", "PerformHook", "PerformRunner", "Performed", "ProducingStage", "ReentrancyStage", "Retry",
    "RetryStage", "Scheduler", "Skipped", "Stage", "TimeLimitStage", "backoff", "build_runner", "calling_after_failure",
    "should_retry",
]
