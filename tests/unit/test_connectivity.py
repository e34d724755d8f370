"""KafkaWatch: a lost broker is reported once, after LOST_AFTER, and its return once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kbridge.listener.connectivity import LOST_AFTER, KafkaWatch, broker_connected


class FakeClient:
    def __init__(self) -> None:
        self.up = True
        self.cluster = SimpleNamespace(brokers=lambda: [SimpleNamespace(node_id=1)])

    def connected(self, node_id: int) -> bool:
        return self.up


def test_lost_is_reported_once_after_the_grace_and_restored_once() -> None:
    now = [0.0]
    events: list[tuple[str, dict[str, Any]]] = []
    watch = KafkaWatch("g", lambda e, p: events.append((e, p)), clock=lambda: now[0])
    consumer = SimpleNamespace(_client=FakeClient())
    watch.check(consumer)
    consumer._client.up = False
    for step in range(int(LOST_AFTER) + 3):
        now[0] += 1.0
        watch.check(consumer)
        if step < LOST_AFTER - 1:
            assert events == [], "a short blip is not an outage"
    assert [e for e, _ in events] == ["kafka.lost"] and events[0][1]["group_id"] == "g"
    consumer._client.up = True
    now[0] += 1.0
    watch.check(consumer)
    now[0] += 1.0
    watch.check(consumer)
    assert [e for e, _ in events] == ["kafka.lost", "kafka.restored"]


def test_a_client_that_cannot_tell_reports_nothing() -> None:
    assert broker_connected(SimpleNamespace()) is None
    events: list[str] = []
    watch = KafkaWatch("g", lambda e, p: events.append(e), clock=lambda: 100.0)
    watch.check(object())
    assert events == []


def test_a_check_that_fails_is_unknown_never_an_error() -> None:
    class Broken:
        cluster = SimpleNamespace(brokers=lambda: [object()])

        def connected(self, node_id: int) -> bool:
            return True

    assert broker_connected(SimpleNamespace(_client=Broken())) is None
