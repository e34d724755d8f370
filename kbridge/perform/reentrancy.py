"""after_failure(exc) sees every failure of perform(), timeouts included (SidekiqGlass's reentrancy).

It runs inside the framework context, so it can use what perform() could. An
after_failure that raises is logged and never hides the original error, which the
retry policy then judges.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

from ..consumer import BaseConsumer
from .job import Job
from .stage import Stage

log = logging.getLogger("kbridge.perform")


class calling_after_failure:  # noqa: N801  (used like a contextmanager function)
    """A plain class rather than @contextmanager: it is entered once per perform() attempt."""

    __slots__ = ("consumer",)

    def __init__(self, consumer: BaseConsumer) -> None:
        self.consumer = consumer

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            try:
                self.consumer.after_failure(exc)
            except Exception:
                log.exception("%s.after_failure raised while handling %r", type(self.consumer).__name__, exc)
        # returning None: the original error goes on to the retry policy


class ReentrancyStage(Stage):
    def around(self, job: Job) -> AbstractContextManager[object]:
        assert job.consumer is not None
        return calling_after_failure(job.consumer)
