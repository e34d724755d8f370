"""throttle (throttle=(LIMIT, SECONDS)): at most LIMIT messages of a partition are handed over in any SECONDS.

It counts what the filters accepted, so it comes after the filter step. It keeps a log of
the recent hand-overs of each partition (a sliding window, so no two back-to-back windows
can together pass twice the limit). Past the limit, the partition is held until the
oldest hand-over in the window leaves it (a planned hold: the partition is paused, never
the loop), and the rest of the batch goes on from there.
"""

from __future__ import annotations

import time
from collections import deque

from kafka import TopicPartition

from .step import PartitionBatch, Step


class ThrottleStep(Step):
    def __init__(self, limit: int, seconds: float) -> None:
        super().__init__()
        self.limit = limit
        self.seconds = seconds
        self._logs: dict[TopicPartition, deque[tuple[float, int]]] = {}  # partition -> (time.monotonic(), count)

    def submit(self, batch: PartitionBatch) -> None:
        assert batch.accepted is not None, "the throttle step comes after the filter step"
        now = time.monotonic()
        log = self._logs.setdefault(batch.tp, deque())
        while log and log[0][0] <= now - self.seconds:
            log.popleft()
        room = self.limit - sum(n for _, n in log)
        wanted = len(batch.accepted)
        if wanted <= room:
            if wanted:
                log.append((now, wanted))
            self.forward(batch)
            return
        if room > 0:
            log.append((now, room))
        reason = f"throttle={self.limit}/{self.seconds:g}s"
        raise self.stop_at(batch, batch.accepted[room].offset, reason, until=log[0][0] + self.seconds)
