"""What may be committed: per partition, the offset after the last message handled in order.

Messages are handled strictly in offset order on the polling thread, so the safe
commit point is simply "one past the last handled message"; a held (unconfirmed)
message stops the partition from advancing until it is handled.
"""

from __future__ import annotations

from collections.abc import Iterable

from kafka import TopicPartition


class OffsetTracker:
    def __init__(self) -> None:
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def mark(self, tp: TopicPartition, offset: int) -> None:
        """Record that every message of tp up to and including offset is handled."""
        if offset + 1 > self._next.get(tp, -1):
            self._next[tp] = offset + 1

    def pending(self, only: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Offsets to commit: handled and not yet committed."""
        tps = self._next if only is None else [tp for tp in only if tp in self._next]
        return {tp: self._next[tp] for tp in tps if self._committed.get(tp) != self._next[tp]}

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop revoked partitions: their next owner starts from the committed offset."""
        for tp in tps:
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
