"""The topic's timeout, where no one else enforces it: inline in the listener, and in TestClient.

A Celery worker does not use this stage: the task message carries a soft limit (which
raises inside perform(), so after_failure sees it) and a hard limit that kills the
child, and Celery enforces both.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from ..deadline import deadline
from .job import Job
from .stage import Stage


class TimeLimitStage(Stage):
    def around(self, job: Job) -> AbstractContextManager[object]:
        return deadline(job.route.timeout, f"{job.route.consumer.__name__}.perform on {job.route.shadow}")
