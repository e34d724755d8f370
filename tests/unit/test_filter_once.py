"""Filters run once per message, and counters count each message once, however often a partition is held.

A hold at the hand-over (the Celery broker down) or at a raising filter's dead letter (Kafka down) is
resumed at the step that held it; the filters that already ran for a message do not run again.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

from kafka import TopicPartition

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.errors import EnqueueError
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.steps import Fetched
from kbridge.params import Params
from kbridge.runtime import Runtime
from tests.unit.test_chain_fuzz import FakeKafkaConsumer

TP = TopicPartition("users", 0)


class FlakyBackend:
    """Confirms `confirm` messages of a call, then fails, while `failures` lasts."""

    def __init__(self) -> None:
        self.failures = 0
        self.confirm = 0
        self.enqueued: list[int] = []

    def enqueue(self, route: Any, messages: Any) -> None:
        for i, m in enumerate(messages):
            if self.failures and i >= self.confirm:
                self.failures -= 1
                raise EnqueueError("broker down", confirmed=i)
            self.enqueued.append(m.offset)

    def housekeeping(self) -> None:
        return None

    def close(self) -> None:
        return None


class FlakyLetters:
    def __init__(self) -> None:
        self.failures = 0
        self.sent: list[int] = []

    def send(self, topic: str, params: Params, error: Any, attempts: int, group_id: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Kafka down")
        self.sent.append(params.offset)


def setup() -> tuple[GroupProcessor, Counter[int], FlakyBackend, FlakyLetters]:
    calls: Counter[int] = Counter()

    class Users(BaseConsumer):
        @before_enqueue
        def decide(self) -> bool:
            calls[self.params.offset] += 1
            if self.params.payload["f"] == "raise":
                raise ValueError("unreadable")
            return bool(self.params.payload["f"] == "keep")

        def perform(self) -> None:
            pass

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    app.topic("users", consumer=Users, backend="inline")
    letters, backend = FlakyLetters(), FlakyBackend()
    runtime = Runtime.of(app, letters)  # type: ignore[arg-type]
    runtime.install_backend("inline", backend)
    proc = GroupProcessor(runtime, app.routes.groups["users"], threading.Event())
    proc.consumer = FakeKafkaConsumer()  # type: ignore[assignment]
    proc._backoff = lambda attempts: 0.0  # type: ignore[method-assign]
    return proc, calls, backend, letters


def fetched(*kinds: str, start: int = 0) -> Fetched:
    return Fetched(TP, messages=[Params(topic="users", partition=0, offset=start + i,
                                        raw_payload=json.dumps({"f": k}).encode()) for i, k in enumerate(kinds)])


def test_a_hand_over_hold_does_not_filter_again() -> None:
    proc, calls, backend, _ = setup()
    backend.failures, backend.confirm = 5, 1
    proc._take(fetched("keep", "drop", "keep", "drop", "keep"))
    for _ in range(10):
        proc._retry_held()
    assert TP not in proc._held
    assert backend.enqueued == [0, 2, 4]
    assert calls == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}
    assert (proc.stats.filtered, proc.stats.enqueued) == (2, 3)
    assert proc.offsets.pending() == {TP: 5}


def test_a_raising_filters_letter_is_retried_alone() -> None:
    proc, calls, backend, letters = setup()
    letters.failures = 4
    proc._take(fetched("keep", "raise", "drop", "keep"))
    assert proc._held[TP].pending[-1].batch.start_offset == 1
    for _ in range(10):
        proc._retry_held()
    assert TP not in proc._held
    assert letters.sent == [1] and backend.enqueued == [0, 3]
    assert calls == {0: 1, 1: 1, 2: 1, 3: 1}  # the raising filter ran once, not once per retry
    assert (proc.stats.filtered, proc.stats.dead_lettered, proc.stats.enqueued) == (1, 1, 2)
    assert proc.offsets.pending() == {TP: 4}


def test_both_holds_in_a_row_still_filter_once() -> None:
    proc, calls, backend, letters = setup()
    letters.failures, backend.failures = 2, 3
    proc._take(fetched("keep", "keep", "raise", "drop", "keep", "raise", "keep"))
    for _ in range(20):
        proc._retry_held()
    assert TP not in proc._held
    assert letters.sent == [2, 5] and backend.enqueued == [0, 1, 4, 6]
    assert set(calls.values()) == {1} and len(calls) == 7
    assert (proc.stats.filtered, proc.stats.dead_lettered, proc.stats.enqueued) == (1, 2, 4)
