"""after_failure(exc) sees every failure of perform(), timeouts included (SidekiqGlass's reentrancy).

It runs inside the framework context, so it can use what perform() could. An
after_failure that raises is logged and never hides the original error, which the
retry policy then judges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from ..consumer import BaseConsumer
from .job import Job
from .stage import Stage

log = logging.getLogger("kbridge.perform")


@contextmanager
def calling_after_failure(consumer: BaseConsumer) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        try:
            consumer.after_failure(exc)
        except Exception:
            log.exception("%s.after_failure raised while handling %r", type(consumer).__name__, exc)
        raise


class ReentrancyStage(Stage):
    def around(self, job: Job) -> AbstractContextManager[object]:
        assert job.consumer is not None
        return calling_after_failure(job.consumer)
