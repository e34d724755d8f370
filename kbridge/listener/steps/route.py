"""route: a fetched partition's records become a batch of lazily deserialized Params of its route.

The topic mapper turns the Kafka name back into the route's name. The payload is not
touched: the listener parses a payload only if a filter reads it.
"""

from __future__ import annotations

from collections.abc import Callable

from ...interchange import params_from_record
from ...routing import Route
from .context import StepContext
from .step import Fetched, PartitionBatch, Step


class RouteStep:
    """The chain's head: it takes what the poll loop fetched rather than a batch."""

    def __init__(self, context: StepContext, route_of: Callable[[str], Route], entry: Callable[[Route], Step]) -> None:
        self.context = context
        self.route_of = route_of
        self.entry = entry  # the first step of the route's chain

    def take(self, fetched: Fetched) -> None:
        tp = fetched.tp
        route = self.route_of(tp.topic)
        if fetched.messages is not None:
            messages = list(fetched.messages)
        else:
            messages = [params_from_record(r, route.deserializer, fetched.receive_time_ms) for r in fetched.records]
        if not messages:
            return
        self.context.stats.fetched += len(messages)
        monitor = self.context.monitor
        if monitor.listens("fetch"):
            highwater = self.context.highwater(tp)
            last = messages[-1].offset
            monitor.instrument("fetch", group_id=self.context.group_id, topic=tp.topic, partition=tp.partition,
                               messages=len(messages), lag=None if highwater is None else max(0, highwater - last - 1))
        self.entry(route).submit(PartitionBatch(tp, route, messages, messages[0].offset, messages[-1].offset,
                                        dict(fetched.refused)))
