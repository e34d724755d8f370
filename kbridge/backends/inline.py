"""Runs perform() in the listener process: no broker, for tests and light topics."""

from __future__ import annotations

from collections.abc import Sequence

from .. import glass
from ..dlq import DeadLetters
from ..errors import EnqueueError
from ..instrumentation import Monitor
from ..params import Params, ParamsBatch
from ..routing.topic import Topic


class InlineBackend:
    def __init__(
        self, dead_letters: DeadLetters, hooks: Sequence[glass.PerformHook] = (), monitor: Monitor | None = None
    ) -> None:
        self.dead_letters = dead_letters
        self.hooks = hooks
        self.monitor = monitor

    def enqueue(self, route: Topic, messages: Sequence[Params]) -> None:
        """One run per message (or per batch of at most max_batch_size); a run that could not even be
        dead-lettered stops here."""
        units = route.units(messages)
        done = 0
        for unit in units:
            try:
                glass.run_inline(route, ParamsBatch(unit), self.dead_letters, self.hooks, self.monitor)
            except Exception as exc:
                raise EnqueueError(
                    f"{route.shadow} offset {unit[0].offset} failed and could not be dead-lettered: "
                    f"{type(exc).__name__}: {exc}",
                    confirmed=done,
                ) from exc
            done += len(unit)
