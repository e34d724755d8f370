"""What flows through the chain, the interface every step implements, and its one backpressure signal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kafka import TopicPartition

from ...errors import KBridgeError
from ...params import Params
from ...routing import Route


@dataclass(frozen=True)
class Fetched:
    """One partition's records from one poll, in offset order (or what kbridge read of an undecodable batch)."""

    tp: TopicPartition
    records: Sequence[Any] = ()  # kafka-python ConsumerRecords
    messages: Sequence[Params] | None = None  # already read (a salvaged batch)
    refused: dict[int, BaseException] = field(default_factory=dict)  # offset -> why the client refused it
    receive_time_ms: float = 0.0


@dataclass
class PartitionBatch:
    """Messages of one partition, in offset order, and what the steps so far decided about them.

    last_offset is the batch's coverage: a message dead-lettered or dropped on the way still
    counts, so marking the batch marks it too.
    """

    tp: TopicPartition
    route: Route
    messages: list[Params]
    start_offset: int  # the first offset this batch covers
    last_offset: int  # the last offset this batch covers
    refused: dict[int, BaseException] = field(default_factory=dict)
    accepted: list[Params] | None = None  # set by the filter step; None: not filtered yet
    filtered: list[Params] = field(default_factory=list)  # rejected on purpose by a filter
    filter_errors: dict[int, Exception] = field(default_factory=dict)  # offset -> what its filter raised
    handovers: list[Sequence[Params]] | None = None  # set by the unit step: one backend call each
    callback_errors: list[Exception] = field(default_factory=list)  # what after_fetch callbacks raised (logged)
    expired: int = 0  # messages the expire step dropped (committed, never handed over)

    def before(self, offset: int) -> PartitionBatch | None:
        """The part of this batch below offset: what was finished when the step stopped at offset (None: nothing)."""
        if offset <= self.start_offset:
            return None
        return replace(
            self,
            messages=[m for m in self.messages if m.offset < offset],
            last_offset=offset - 1,
            refused={o: e for o, e in self.refused.items() if o < offset},
            accepted=None if self.accepted is None else [m for m in self.accepted if m.offset < offset],
            filtered=[m for m in self.filtered if m.offset < offset],
            filter_errors={o: e for o, e in self.filter_errors.items() if o < offset},
            handovers=None if self.handovers is None else _split(self.handovers, lambda o: o < offset),
            callback_errors=list(self.callback_errors),
        )

    def from_(self, offset: int) -> PartitionBatch:
        """The part of this batch from offset on: what is left to do."""
        return replace(
            self,
            start_offset=max(offset, self.start_offset),
            messages=[m for m in self.messages if m.offset >= offset],
            refused={o: e for o, e in self.refused.items() if o >= offset},
            accepted=None if self.accepted is None else [m for m in self.accepted if m.offset >= offset],
            filtered=[m for m in self.filtered if m.offset >= offset],
            filter_errors={o: e for o, e in self.filter_errors.items() if o >= offset},
            handovers=None if self.handovers is None else _split(self.handovers, lambda o: o >= offset),
            callback_errors=[],
            expired=0,
        )

    def __repr__(self) -> str:
        return f"<PartitionBatch {self.tp.topic}-{self.tp.partition} {len(self.messages)} up to {self.last_offset}>"


def _split(calls: list[Sequence[Params]], keep: Any) -> list[Sequence[Params]]:
    kept = [[m for m in unit if keep(m.offset)] for unit in calls]
    return [unit for unit in kept if unit]


class Step:
    """One link of the chain. submit() does this step's work and hands the batch on to self.next."""

    def __init__(self) -> None:
        self.next: Step | None = None

    def submit(self, batch: PartitionBatch) -> None:
        raise NotImplementedError

    def forward(self, batch: PartitionBatch | None) -> None:
        if self.next is not None and batch is not None:
            self.next.submit(batch)

    def stop_at(self, batch: PartitionBatch, offset: int, reason: str, until: float | None = None) -> Hold:
        """Hand on what was done below offset, and the hold of the rest, to be resumed here.

        until (time.monotonic()) makes it a planned wait rather than a failure: the loop resumes the
        partition then, without backoff or warnings (flow control: delay, throttle, the breaker's cooldown).
        """
        rest = batch.from_(offset)
        try:
            self.forward(batch.before(offset))
        except Hold as hold:
            return hold.then(self, rest)
        return Hold([Pending(self, rest)], reason, until)

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Pending:
    step: Step
    batch: PartitionBatch


class Hold(KBridgeError):
    """The one backpressure signal, raised by a step: pause the partition; later, submit each pending batch
    again, in order, to its step."""

    def __init__(self, pending: list[Pending], reason: str, until: float | None = None) -> None:
        super().__init__(reason)
        self.pending = pending
        self.reason = reason
        self.until = until  # time.monotonic() to resume at; None: a failure, retried with backoff

    def then(self, step: Step, rest: PartitionBatch) -> Hold:
        """This hold, followed by rest still to do at step: a step that was itself stopped downstream."""
        return Hold([*self.pending, Pending(step, rest)], self.reason, self.until)
