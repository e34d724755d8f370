"""throttle (throttle=(LIMIT, SECONDS)): at most LIMIT messages of a partition are handed over per SECONDS.

It counts what the filters accepted, so it comes after the filter step. Past the limit,
the partition is held until the window ends (a planned hold: the partition is paused,
never the loop), and the rest of the batch goes on from there.
"""

from __future__ import annotations

import time

from kafka import TopicPartition

from .step import PartitionBatch, Step


class ThrottleStep(Step):
    def __init__(self, limit: int, seconds: float) -> None:
        super().__init__()
        self.limit = limit
        self.seconds = seconds
        self._windows: dict[TopicPartition, tuple[float, int]] = {}  # partition -> (window start, handed over)

    def submit(self, batch: PartitionBatch) -> None:
        assert batch.accepted is not None, "the throttle step comes after the filter step"
        now = time.monotonic()
        started, count = self._windows.get(batch.tp, (now, 0))
        if now - started >= self.seconds:
            started, count = now, 0
        room = self.limit - count
        if len(batch.accepted) <= room:
            self._windows[batch.tp] = (started, count + len(batch.accepted))
            self.forward(batch)
            return
        self._windows[batch.tp] = (started, self.limit)
        reason = f"throttle={self.limit}/{self.seconds:g}s"
        raise self.stop_at(batch, batch.accepted[room].offset, reason, until=started + self.seconds)
