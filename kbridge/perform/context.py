"""Context managers around every perform() and after_failure(): a framework's app context, connection hygiene.

Integrations register them (app.perform_hooks); core never knows which framework they serve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager

from ..consumer import BaseConsumer
from .job import Job
from .stage import Stage

PerformHook = Callable[[BaseConsumer], AbstractContextManager[object]]


class ContextStage(Stage):
    """Enters the hooks outermost first. hooks is the app's live list: an integration bound later still counts."""

    def __init__(self, hooks: Sequence[PerformHook]) -> None:
        self.hooks = hooks

    @contextmanager
    def _entered(self, consumer: BaseConsumer) -> Iterator[None]:
        with ExitStack() as stack:
            for hook in self.hooks:
                stack.enter_context(hook(consumer))
            yield

    def around(self, job: Job) -> AbstractContextManager[object] | None:
        if not self.hooks:
            return None
        assert job.consumer is not None
        return self._entered(job.consumer)
