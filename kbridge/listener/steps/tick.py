"""tick (tick_interval=SECONDS): consumer.tick() for each assigned partition that got no message for that long.

The step notes when each partition of its route last got a batch; the poll loop asks it,
once per turn, which assigned partitions have been idle for tick_interval and hands
those ticks to the route's backend (Backend.tick): inline runs tick() on the listener's
thread through the perform runner, celery sends a kbridge.tick task that runs it in a
worker. A tick that fails or cannot be sent is logged; the next one comes tick_interval later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from kafka import TopicPartition

from ...routing import Route
from .context import StepContext
from .step import PartitionBatch, Step

log = logging.getLogger("kbridge.listener")


class TickStep(Step):
    def __init__(self, context: StepContext, route: Route, interval: float) -> None:
        super().__init__()
        self.context = context
        self.route = route
        self.interval = interval
        self._seen: dict[TopicPartition, float] = {}  # partition -> time.monotonic() of its last message or tick

    def submit(self, batch: PartitionBatch) -> None:
        self._seen[batch.tp] = time.monotonic()
        self.forward(batch)

    def idle(self, assigned: Iterable[TopicPartition], route_of: Callable[[str], Route]) -> None:
        """Tick every assigned partition of this route that was idle for the interval."""
        now = time.monotonic()
        mine = set()
        for tp in assigned:
            try:
                if route_of(tp.topic) is not self.route:
                    continue
            except KeyError:
                continue
            mine.add(tp)
            last = self._seen.setdefault(tp, now)  # a newly assigned partition: counted from now
            if now - last >= self.interval:
                self._seen[tp] = now
                self._tick(tp)
        for tp in set(self._seen) - mine:  # revoked
            del self._seen[tp]

    def _tick(self, tp: TopicPartition) -> None:
        route = self.route
        try:
            backend = self.context.runtime.backend(route.backend)
            tick = getattr(backend, "tick", None)
            if tick is None:
                raise NotImplementedError(f"backend {route.backend!r} cannot run tick()")
            tick(route, tp)
        except Exception as exc:
            log.warning("tick of %s %s-%d not done: %s: %s; the next comes in %gs", route.shadow, tp.topic,
                        tp.partition, type(exc).__name__, exc, self.interval)
