"""Inside perform(), respond_with() and kbridge.produce() send through the runtime that runs it.

So a process holding several apps (tests, a multi-tenant worker) produces through the
app that routed the message, with its topic mapper, and no lookup across apps is needed.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from ..producer import Producer, producing_with
from .job import Job
from .stage import Stage


class ProducingStage(Stage):
    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def around(self, job: Job) -> AbstractContextManager[object]:
        return producing_with(self.producer)
