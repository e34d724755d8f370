"""pause: holds a partition that was paused from `kbridge web`, until it is resumed.

It uses the one backpressure signal every step has, as a planned wait: the loop pauses the
partition and submits the held batch here again after RECHECK seconds, with no backoff and no
warning lines, so a resume takes effect within about a second. Only in the chain when the app
turns web_reports on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..controls import PAUSED_REASON
from .step import PartitionBatch, Step

RECHECK = 1.0  # seconds between looks at whether a paused partition was resumed


class PauseStep(Step):
    def __init__(self, group_id: str, paused: Callable[[str, str, int], bool]) -> None:
        super().__init__()
        self.group_id = group_id
        self.paused = paused

    def submit(self, batch: PartitionBatch) -> None:
        if self.paused(self.group_id, batch.tp.topic, batch.tp.partition):
            raise self.stop_at(batch, batch.start_offset, PAUSED_REASON, until=time.monotonic() + RECHECK)
        self.forward(batch)
