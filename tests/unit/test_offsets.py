from __future__ import annotations

from kafka import TopicPartition

from kbridge.listener.offsets import OffsetTracker

A = TopicPartition("t", 0)
B = TopicPartition("t", 1)


def test_nothing_pending_at_start() -> None:
    assert OffsetTracker().pending() == {}


def test_mark_makes_offset_plus_one_pending() -> None:
    t = OffsetTracker()
    t.mark(A, 0)
    t.mark(A, 4)
    t.mark(B, 9)
    assert t.pending() == {A: 5, B: 10}


def test_mark_never_moves_backwards() -> None:
    t = OffsetTracker()
    t.mark(A, 7)
    t.mark(A, 3)
    assert t.pending() == {A: 8}


def test_committed_offsets_are_no_longer_pending_until_marked_again() -> None:
    t = OffsetTracker()
    t.mark(A, 4)
    t.mark(B, 1)
    t.committed({A: 5})
    assert t.pending() == {B: 2}
    t.committed({B: 2})
    assert t.pending() == {}
    t.mark(A, 5)
    assert t.pending() == {A: 6}


def test_pending_can_be_limited_to_some_partitions() -> None:
    t = OffsetTracker()
    t.mark(A, 1)
    t.mark(B, 2)
    assert t.pending([B]) == {B: 3}
    assert t.pending([TopicPartition("other", 0)]) == {}


def test_forget_drops_handled_and_committed_state() -> None:
    t = OffsetTracker()
    t.mark(A, 10)
    t.committed({A: 11})
    t.mark(B, 3)
    t.forget([A, B])
    assert t.pending() == {}
    t.mark(A, 2)  # a new owner's lower offset counts again
    assert t.pending() == {A: 3}
