"""Which flow-control steps a route gets, and where: only the options it sets, so an unset one costs nothing.

route -> [tick] -> [expire] -> [delay] -> [breaker] -> refused -> after_fetch -> filter -> [throttle] -> unit
-> hand over -> mark

- tick first: any fetched batch makes its partition not idle;
- expire before delay (expiry is judged at fetch), both before the callbacks and filters, so a
  dropped or waiting message costs no filter run and filters see it when it is due;
- the breaker after them and before everything that can dead-letter, so it sees every dead
  letter, those of delayed messages too (a delay resumes its messages into the breaker);
- throttle after the filter: it limits what is handed over.
"""

from __future__ import annotations

from collections.abc import Callable

from ...routing import Route
from .breaker import BreakerStep
from .context import StepContext
from .delay import DelayStep
from .expire import ExpireStep
from .filter import FilterStep
from .step import Step
from .throttle import ThrottleStep
from .tick import TickStep


def around(context: StepContext, route: Route | None, steps: list[Step]) -> list[Step]:
    """steps (the chain without flow control) with route's flow-control steps inserted, linked in order."""
    if route is not None:
        head: list[Step] = []
        if route.tick_interval is not None:
            head.append(TickStep(context, route, route.tick_interval))
        if route.expire_after is not None:
            head.append(ExpireStep(context, route.expire_after))
        if route.delay_by is not None:
            head.append(DelayStep(route.delay_by))
        if route.dead_letter_max_ratio is not None:
            head.append(BreakerStep(context, route.dead_letter_max_ratio, route.dead_letter_min_messages,
                                    route.dead_letter_cooldown))
        steps = head + steps
        if route.throttle is not None:
            steps = _after(steps, FilterStep, [ThrottleStep(*route.throttle)])
    for step, after in zip(steps, steps[1:], strict=False):
        step.next = after
    return steps


def _after(steps: list[Step], kind: type[Step], inserted: list[Step]) -> list[Step]:
    at = next(i for i, s in enumerate(steps) if isinstance(s, kind)) + 1
    return [*steps[:at], *inserted, *steps[at:]]


def uses_flow(route: Route) -> bool:
    return any(v is not None for v in (route.tick_interval, route.dead_letter_max_ratio, route.expire_after,
                                       route.delay_by, route.throttle))


class Entries:
    """route -> the first step of its chain: one shared chain for routes without flow control, one each otherwise."""

    def __init__(self, build: Callable[[Route | None], list[Step]]) -> None:
        self._build = build
        self._plain = build(None)[0]
        self._by_id: dict[str, Step] = {}
        self.ticks: list[TickStep] = []

    def prepare(self, route: Route) -> Step:
        steps = self._build(route) if uses_flow(route) else [self._plain]
        self.ticks.extend(s for s in steps if isinstance(s, TickStep))
        self._by_id[route.route_id] = steps[0]
        return steps[0]

    def __call__(self, route: Route) -> Step:
        try:
            return self._by_id[route.route_id]
        except KeyError:
            return self.prepare(route)
