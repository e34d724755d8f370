"""The listener's collector settings: raised once, never lowered, and left off when the program turned it off."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kbridge.listener import collector


@pytest.fixture
def fresh_collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = gc.get_threshold()
    monkeypatch.setattr(collector, "_tuned", False)
    yield
    gc.set_threshold(*before)


def test_the_young_threshold_is_raised_once_and_objects_alive_at_start_are_frozen(fresh_collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    frozen = gc.get_freeze_count()
    collector.tune_collector()
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() >= frozen
    gc.set_threshold(800, 10, 10)
    collector.tune_collector()
    assert gc.get_threshold() == (800, 10, 10), "applied once per process"


def test_a_higher_threshold_or_a_disabled_collector_is_left_as_it_is(fresh_collector: None) -> None:
    gc.set_threshold(collector.YOUNG_THRESHOLD * 2, 5, 5)
    collector.tune_collector()
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD * 2, 5, 5)
    collector._tuned = False
    gc.set_threshold(0, 5, 5)
    collector.tune_collector()
    assert gc.get_threshold()[0] == 0


def test_housekeeping_frees_cyclic_garbage_the_raised_threshold_leaves_behind(fresh_collector: None) -> None:
    import weakref

    collector.tune_collector()

    class Holder:
        pass

    held = Holder()
    held.self = held  # a cycle, as a traceback kept in a failed perform's frame makes
    gone = weakref.ref(held)
    del held
    assert gone() is not None, "a cycle is left to the collector"
    collector.collect_young()
    assert gone() is None
