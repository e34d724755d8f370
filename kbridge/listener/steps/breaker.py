"""breaker: the dead-letter circuit breaker (dead_letter_max_ratio, dead_letter_min_messages, dead_letter_cooldown).

When more than dead_letter_max_ratio of a route's recent messages (at least
dead_letter_min_messages of them) were dead-lettered in the listener (poison records,
filters that raise, payloads that do not parse or validate), the route's partitions are
held for dead_letter_cooldown seconds: a bad deploy stops instead of moving a whole topic
into the dead-letter topic. Each partition of the route is held as its next batch arrives.

It counts the group's dead letters while the rest of the chain runs a batch, so it sees
every step that dead-letters. The breaker judges between slices of a batch, each handed
over on its own: on a healthy route without before_enqueue filters a batch is one slice
(only undecodable records are dead-lettered there, so nothing changes on the hot path);
with filters (which parse payloads, so any message can be poison) a slice is at most
dead_letter_min_messages; once recent messages were dead-lettered, a slice is no larger
than the dead letters still allowed, so the breaker trips at the threshold rather than
after a whole poll. After the cooldown the recent history is kept: the route goes on
message by message, and trips again at once if the dead letters go on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import replace

from .context import StepContext
from .step import Hold, PartitionBatch, Pending, Step

log = logging.getLogger("kbridge.listener")


class BreakerStep(Step):
    def __init__(self, context: StepContext, ratio: float, least: int, cooldown: float) -> None:
        super().__init__()
        self.context = context
        self.ratio = ratio
        self.least = least
        self.cooldown = cooldown
        self._recent: deque[tuple[int, int]] = deque()  # (messages, dead-lettered) per slice, oldest first
        self.messages = 0  # sums over _recent
        self.dead = 0
        self.open_until = 0.0  # time.monotonic() the route is held until; 0.0: not tripped

    def submit(self, batch: PartitionBatch) -> None:
        if self.open_until:
            if time.monotonic() < self.open_until:
                raise self.stop_at(batch, batch.start_offset, self._reason(), until=self.open_until)
            self._closed(batch)
        start = 0
        while start < len(batch.messages):
            size = self._slice_size(len(batch.messages) - start, bool(batch.route.consumer._filters))
            end = start + size
            part = batch if start == 0 and end >= len(batch.messages) else _slice(batch, start, end)
            before = self.context.stats.dead_lettered
            try:
                self.forward(part)
            except Hold as hold:  # count what was done; what a later step resumes is not seen here again
                stopped = hold.pending[0].batch.start_offset
                self._record(sum(m.offset < stopped for m in part.messages), self.context.stats.dead_lettered - before)
                if end < len(batch.messages):
                    raise hold.then(self, batch.from_(batch.messages[end].offset)) from None
                raise
            self._record(len(part.messages), self.context.stats.dead_lettered - before)
            if self._tripped(batch):
                if end < len(batch.messages):
                    raise Hold([Pending(self, batch.from_(batch.messages[end].offset))], self._reason(),
                               self.open_until)
                return
            start = end
        if not batch.messages:
            self.forward(batch)  # nothing to judge; the batch still covers its offsets

    def _slice_size(self, left: int, filters: bool) -> int:
        if not self.dead:
            # Healthy. Without filters only records the client cannot decode are dead-lettered here (rare): one
            # piece. Filters (and the payload parsing they do) can dead-letter any message: at most a window.
            return min(left, self.least) if filters else left
        allowed = int(self.ratio * max(self.messages, self.least)) - self.dead
        return max(1, min(left, allowed))

    def _record(self, messages: int, dead: int) -> None:
        self._recent.append((messages, dead))
        self.messages += messages
        self.dead += dead
        while len(self._recent) > 1 and self.messages - self._recent[0][0] >= self.least:
            old_messages, old_dead = self._recent.popleft()
            self.messages -= old_messages
            self.dead -= old_dead

    def _tripped(self, batch: PartitionBatch) -> bool:
        if self.messages < self.least or self.dead <= self.ratio * self.messages:
            return False
        ctx, route = self.context, batch.route
        self.open_until = time.monotonic() + self.cooldown
        log.error(
            "DEAD-LETTER BREAKER TRIPPED for route %s: %d of its last %d messages were dead-lettered (more than "
            "dead_letter_max_ratio=%g); holding its partitions for %gs instead of dead-lettering the topic. "
            "Check the dead-letter topic %s for what changed (a bad deploy, a new producer)",
            route.route_id, self.dead, self.messages, self.ratio, self.cooldown, route.dead_letter_topic,
        )
        ctx.monitor.instrument("breaker.tripped", group_id=ctx.group_id, route=route.route_id,
                               topic=batch.tp.topic, partition=batch.tp.partition, messages=self.messages,
                               dead_lettered=self.dead, ratio=self.dead / self.messages, cooldown=self.cooldown)
        return True

    def _closed(self, batch: PartitionBatch) -> None:
        ctx, route = self.context, batch.route
        self.open_until = 0.0
        log.warning("dead-letter breaker of route %s: cooldown over, resuming message by message", route.route_id)
        ctx.monitor.instrument("breaker.closed", group_id=ctx.group_id, route=route.route_id,
                               topic=batch.tp.topic, partition=batch.tp.partition)

    def _reason(self) -> str:
        return f"dead-letter breaker open ({self.dead} of {self.messages} recent messages dead-lettered)"


def _slice(batch: PartitionBatch, start: int, end: int) -> PartitionBatch:
    """Messages [start, end) of a batch no step has decided on yet, covering the offsets up to the next slice's
    first message; cut by position, as the batch is cut many times."""
    messages = batch.messages
    first = messages[start].offset if start else batch.start_offset
    last = messages[end].offset - 1 if end < len(messages) else batch.last_offset
    refused = {o: e for o, e in batch.refused.items() if first <= o <= last} if batch.refused else {}
    return replace(batch, messages=messages[start:end], start_offset=first, last_offset=last, refused=refused,
                   callback_errors=[])
