"""delay (delay_by=SECONDS): a message is handed over no earlier than its Kafka timestamp plus SECONDS.

Messages already due go on; at the first one that is not, the partition is held until it
is due (a planned hold: the loop pauses that partition only, so every other partition and
topic keeps flowing, and nothing sleeps). A message's wait is counted from the earlier of
its timestamp and the time it was fetched, so a timestamp in the future (a skewed or
forged producer clock) delays it by SECONDS at most, never stalls the partition.
"""

from __future__ import annotations

import time

from .step import PartitionBatch, Step


class DelayStep(Step):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.ms = seconds * 1000.0

    def submit(self, batch: PartitionBatch) -> None:
        now_ms = time.time() * 1000.0
        for m in batch.messages:
            since = m.timestamp_ms if m.timestamp_ms is not None and m.timestamp_ms >= 0 else now_ms
            due_ms = min(since, m.receive_time_ms or now_ms) + self.ms
            if due_ms > now_ms:
                until = time.monotonic() + (due_ms - now_ms) / 1000.0
                raise self.stop_at(batch, m.offset, f"delay_by={self.seconds:g}s", until=until)
        self.forward(batch)
