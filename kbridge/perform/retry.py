"""The retry policy: exponential backoff with equal jitter, up to the topic's max_retries.

A payload that cannot be deserialized is never retried: no attempt can read it.
"""

from __future__ import annotations

import logging
import random

from ..errors import DeserializationError
from ..instrumentation import Monitor
from .job import Job, Outcome, Retry
from .stage import Stage

log = logging.getLogger("kbridge.perform")

NOT_RETRIED = (DeserializationError,)


def should_retry(max_retries: int, error: BaseException, retries_done: int) -> bool:
    return not isinstance(error, NOT_RETRIED) and retries_done < max_retries


def backoff(base: float, ceiling: float, retries_done: int) -> float:
    """Exponential, with equal jitter so workers retrying together spread out but never retry at once."""
    top = min(ceiling, base * 2.0**retries_done)
    return top / 2 + random.uniform(0, top / 2)


class RetryStage(Stage):
    def __init__(self, monitor: Monitor | None = None) -> None:
        self.monitor = monitor

    def on_failure(self, job: Job, error: BaseException) -> Outcome | None:
        route = job.route
        if not isinstance(error, Exception) or not should_retry(route.max_retries, error, job.attempt - 1):
            return None
        countdown = backoff(route.retry_backoff, route.retry_backoff_max, job.attempt - 1)
        log.warning(
            "%s attempt %d/%d failed: %s: %s; retrying in %.1fs",
            route.shadow, job.attempt, route.max_retries + 1, type(error).__name__, error, countdown,
        )
        if self.monitor is not None:
            self.monitor.instrument("retry", **job.where(), attempt=job.attempt, countdown=countdown)
        return Retry(error, countdown)
