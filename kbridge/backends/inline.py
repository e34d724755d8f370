"""Runs perform() in the listener process: no broker, for tests and light topics."""

from __future__ import annotations

from collections.abc import Sequence

from .. import glass
from ..dlq import DeadLetters
from ..params import Params, ParamsBatch
from ..routing.topic import Topic


class InlineBackend:
    def __init__(self, dead_letters: DeadLetters) -> None:
        self.dead_letters = dead_letters

    def enqueue(self, route: Topic, messages: Sequence[Params]) -> None:
        glass.run_inline(route, ParamsBatch(messages), self.dead_letters)
