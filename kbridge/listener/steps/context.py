"""What every step of one consumer group's chain shares: the runtime's services, the group's counters and offsets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kafka import TopicPartition

if TYPE_CHECKING:
    from ...instrumentation import Monitor
    from ...runtime import Runtime
    from ..offsets import OffsetTracker
    from ..processor import Stats


@dataclass
class StepContext:
    group_id: str
    runtime: Runtime
    stats: Stats
    offsets: OffsetTracker
    # the high watermark of a partition after a fetch, for the fetch event's lag; None: unknown
    highwater: Callable[[TopicPartition], int | None] = field(default=lambda tp: None)
    # kbridge web's pause commands: (group_id, topic, partition) -> paused?; None: not in the chain
    paused: Callable[[str, str, int], bool] | None = None

    @property
    def monitor(self) -> Monitor:
        return self.runtime.monitor
