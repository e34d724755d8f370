"""Assembling the chain, and submitting to it with the hold signal turned into what the loop does with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...routing import Route
from .after_fetch import AfterFetchStep
from .context import StepContext
from .filter import FilterStep
from .hand_over import HandOverStep
from .mark import MarkStep
from .pause import PauseStep
from .refused import RefusedStep
from .route import RouteStep
from .step import Fetched, Hold, Pending, Step
from .unit import UnitStep


class Chain:
    def __init__(self, head: RouteStep) -> None:
        self.head = head

    def take(self, fetched: Fetched) -> Hold | None:
        """Run a fetched partition through every step; the hold a step asked for, if any."""
        try:
            self.head.take(fetched)
        except Hold as hold:
            return hold
        return None

    @staticmethod
    def resume(pending: list[Pending]) -> Hold | None:
        """Submit what a hold left, in order, each to the step that held it; a new hold stops there."""
        for i, item in enumerate(pending):
            try:
                item.step.submit(item.batch)
            except Hold as hold:
                return Hold([*hold.pending, *pending[i + 1:]], hold.reason)
        return None


def build_chain(context: StepContext, route_of: Callable[[str], Route], tail: Sequence[Step] = ()) -> Chain:
    """route -> refused -> after_fetch -> filter -> unit -> hand over -> mark (-> tail: observers, for tests)."""
    steps: list[Step] = [
        *([PauseStep(context.group_id, context.paused)] if context.paused is not None else []),
        RefusedStep(context), AfterFetchStep(), FilterStep(context), UnitStep(), HandOverStep(context),
        MarkStep(context), *tail,
    ]
    for step, after in zip(steps, steps[1:], strict=False):
        step.next = after
    return Chain(RouteStep(context, route_of, steps[0]))
