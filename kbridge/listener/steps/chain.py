"""Assembling the chain, and submitting to it with the hold signal turned into what the loop does with it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ...routing import Route
from . import flow
from .after_fetch import AfterFetchStep
from .context import StepContext
from .filter import FilterStep
from .hand_over import HandOverStep
from .mark import MarkStep
from .refused import RefusedStep
from .route import RouteStep
from .step import Fetched, Hold, Pending, Step
from .tick import TickStep
from .tracing import tracing_steps
from .unit import UnitStep


class Chain:
    def __init__(self, head: RouteStep, ticks: list[TickStep] | None = None) -> None:
        self.head = head
        self.ticks = ticks if ticks is not None else []  # the tick steps the loop asks for idle partitions

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
                return Hold([*hold.pending, *pending[i + 1:]], hold.reason, hold.until)
        return None


def build_chain(context: StepContext, route_of: Callable[[str], Route], tail: Sequence[Step] = (),
                routes: Iterable[Route] = ()) -> Chain:
    """route -> refused -> after_fetch -> filter -> unit -> hand over -> mark (-> tail: observers, for tests),
    with each route's flow-control steps (flow.py); routes: built now, so their ticks run before any message."""
    def steps(route: Route | None) -> list[Step]:
        return flow.around(context, route, [
            RefusedStep(context), AfterFetchStep(), FilterStep(context), UnitStep(), *tracing_steps(),
            HandOverStep(context), MarkStep(context), *tail,
        ])

    entries = flow.Entries(steps)
    for route in routes:
        entries.prepare(route)
    return Chain(RouteStep(context, route_of, entries), entries.ticks)
