"""Runs perform() in the listener process: no broker, for tests and light topics."""

from __future__ import annotations

from collections.abc import Sequence

from .. import glass
from ..params import Params, ParamsBatch
from ..routing.topic import Topic


class InlineBackend:
    def enqueue(self, route: Topic, messages: Sequence[Params]) -> None:
        glass.run(route.consumer(route, ParamsBatch(messages)))
