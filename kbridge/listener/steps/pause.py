"""pause: holds a partition that was paused from `kbridge web`, until it is resumed.

It uses the one backpressure signal every step has: the loop pauses the partition and
submits the held batch here again after its backoff, so a resume takes effect within
enqueue_backoff_max. Only in the chain when the app turns web_reports on.
"""

from __future__ import annotations

from collections.abc import Callable

from ..controls import PAUSED_REASON
from .step import PartitionBatch, Step


class PauseStep(Step):
    def __init__(self, group_id: str, paused: Callable[[str, str, int], bool]) -> None:
        super().__init__()
        self.group_id = group_id
        self.paused = paused

    def submit(self, batch: PartitionBatch) -> None:
        if self.paused(self.group_id, batch.tp.topic, batch.tp.partition):
            raise self.stop_at(batch, batch.start_offset, PAUSED_REASON)
        self.forward(batch)
