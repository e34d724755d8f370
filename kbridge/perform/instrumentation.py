"""perform.started / .finished / .failed events around every attempt, on every backend alike."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from ..instrumentation import Monitor
from .job import Job
from .stage import Stage


class InstrumentationStage(Stage):
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    @contextmanager
    def _observed(self, job: Job) -> Iterator[None]:
        where = job.where()
        self.monitor.instrument("perform.started", **where, attempt=job.attempt)
        started = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.monitor.instrument("perform.failed", **where, attempt=job.attempt,
                                    seconds=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")
            raise
        self.monitor.instrument("perform.finished", **where, attempt=job.attempt, seconds=time.monotonic() - started)

    def around(self, job: Job) -> AbstractContextManager[object] | None:
        listens = self.monitor.listens
        if not (listens("perform.started") or listens("perform.finished") or listens("perform.failed")):
            return None  # nobody listens: no payloads built, no clock read, per task
        return self._observed(job)
