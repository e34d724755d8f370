"""GroupProcessor's handling, with a fake Kafka consumer (pause/resume/commit recorded) and the inline backend."""

from __future__ import annotations

import json
import threading

import pytest
from kafka import OffsetAndMetadata, TopicPartition

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.errors import ConfigError
from kbridge.listener.processor import GroupProcessor
from kbridge.listener.steps import Fetched
from kbridge.params import Params
from kbridge.runtime import Runtime

TP = TopicPartition("users", 0)


class FakeKafkaConsumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.calls: list[tuple[str, object]] = []

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)
        self.calls.append(("pause", tps))

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)
        self.calls.append(("resume", tps))

    def commit(self, offsets: dict) -> None:
        self.calls.append(("commit", dict(offsets)))

    def commits(self) -> list[dict]:
        return [arg for name, arg in self.calls if name == "commit"]  # type: ignore[misc]


class FakeDeadLetters:
    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, int, str]] = []

    def send(self, topic: str, params: Params, error: BaseException, attempts: int, group_id: str) -> None:
        if self.down:
            raise ConnectionError("dead-letter produce not acknowledged")
        self.sent.append((topic, params.offset, str(error)))


class Users(BaseConsumer):
    performed: list[int] = []
    failing: set[int] = set()

    @before_enqueue
    def keep(self) -> bool:
        payload = self.params.payload
        if payload.get("explode"):
            raise ValueError("filter exploded")
        return payload.get("keep", True)

    def perform(self) -> None:
        for p in self.params_batch:
            if p.offset in self.failing:
                raise RuntimeError(f"perform failed at {p.offset}")
        self.performed.extend(p.offset for p in self.params_batch)


def msgs(*offsets: int, **payload: object) -> list[Params]:
    raw = json.dumps(payload).encode()
    return [Params(topic="users", partition=0, offset=o, raw_payload=raw) for o in offsets]


@pytest.fixture
def setup():
    consumer = type("Users", (Users,), {"performed": [], "failing": set()})
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    dead = FakeDeadLetters()
    route = app.topic("users", consumer=consumer, max_retries=0)
    proc = GroupProcessor(Runtime.of(app, dead), app.routes.groups["users"], threading.Event())
    proc.consumer = FakeKafkaConsumer()  # type: ignore[assignment]
    proc._backoff = lambda attempts: 0.0  # type: ignore[method-assign]  # held messages are due at once
    return proc, route, consumer, dead


def test_filtered_messages_are_marked_handled(setup) -> None:
    proc, route, consumer, _ = setup
    proc._take(Fetched(TP, messages=msgs(10, 11, 12, keep=False)))
    assert consumer.performed == []
    assert proc.offsets.pending() == {TP: 13}
    assert proc.stats.filtered == 3 and proc.stats.enqueued == 0
    assert proc.consumer.paused == set()


def test_accepted_messages_are_performed_inline_and_marked(setup) -> None:
    proc, route, consumer, _ = setup
    proc._take(Fetched(TP, messages=msgs(0, 1, 2)))
    assert consumer.performed == [0, 1, 2]
    assert proc.offsets.pending() == {TP: 3}
    assert proc.stats.enqueued == 3


def test_unconfirmed_handover_pauses_and_holds_the_rest(setup) -> None:
    proc, route, consumer, dead = setup
    consumer.failing = {12}
    dead.down = True  # perform fails, max_retries=0, and the dead letter is not acknowledged
    proc._take(Fetched(TP, messages=msgs(10, 11, 12, 13, 14)))
    assert consumer.performed == [10, 11]
    assert proc.offsets.pending() == {TP: 12}
    assert proc.consumer.paused == {TP}
    assert [p.offset for p in proc._held[TP].messages] == [12, 13, 14]

    proc.commit()
    assert proc.consumer.commits() == [{TP: OffsetAndMetadata(12, "", -1)}]


def test_failed_retry_stays_paused_and_marks_nothing_more(setup) -> None:
    proc, route, consumer, dead = setup
    consumer.failing = {12}
    dead.down = True
    proc._take(Fetched(TP, messages=msgs(10, 11, 12, 13)))
    proc._retry_held()
    assert consumer.performed == [10, 11]
    assert proc.offsets.pending() == {TP: 12}
    assert proc.consumer.paused == {TP}
    assert proc._held[TP].attempts == 2


def test_successful_retry_resumes_and_marks_everything(setup) -> None:
    proc, route, consumer, dead = setup
    consumer.failing = {12}
    dead.down = True
    proc._take(Fetched(TP, messages=msgs(10, 11, 12, 13, 14)))
    proc.commit()

    dead.down = False  # Kafka takes dead letters again
    proc._retry_held()
    # 12's perform() gave up once; only its dead letter was retried, perform() did not run again
    assert consumer.performed == [10, 11, 13, 14]
    assert [offset for _, offset, *_ in dead.sent] == [12]
    assert proc.offsets.pending() == {TP: 15}
    assert proc.consumer.paused == set()
    assert ("resume", (TP,)) in proc.consumer.calls
    assert TP not in proc._held
    proc.commit()
    proc.commit()  # nothing new: no second commit of the same offset
    assert proc.consumer.commits() == [{TP: OffsetAndMetadata(12, "", -1)}, {TP: OffsetAndMetadata(15, "", -1)}]


def test_failed_perform_is_dead_lettered_and_handled(setup) -> None:
    proc, route, consumer, dead = setup
    consumer.failing = {1}
    proc._take(Fetched(TP, messages=msgs(0, 1, 2)))
    assert consumer.performed == [0, 2]
    assert dead.sent == [("users.dlq", 1, "perform failed at 1")]
    assert proc.offsets.pending() == {TP: 3}
    assert proc.consumer.paused == set()


def test_raising_filter_dead_letters_that_message_only(setup) -> None:
    proc, route, consumer, dead = setup
    proc._take(Fetched(TP, messages=msgs(0) + msgs(1, explode=True) + msgs(2)))
    assert consumer.performed == [0, 2]
    assert dead.sent == [("users.dlq", 1, "filter exploded")]
    assert proc.offsets.pending() == {TP: 3}
    assert proc.stats.dead_lettered == 1


def test_raising_filter_with_kafka_down_holds_the_message(setup) -> None:
    proc, route, consumer, dead = setup
    dead.down = True
    proc._take(Fetched(TP, messages=msgs(0) + msgs(1, explode=True) + msgs(2)))
    assert consumer.performed == [0]
    assert proc.offsets.pending() == {TP: 1}
    assert proc.consumer.paused == {TP}


def test_commit_only_named_partitions(setup) -> None:
    proc, route, _, _ = setup
    other = TopicPartition("users", 1)
    proc._take(Fetched(TP, messages=msgs(4)))
    proc._take(Fetched(other, messages=[Params(topic="users", partition=1, offset=8, raw_payload=b"{}")]))
    proc.commit([other])
    assert proc.consumer.commits() == [{other: OffsetAndMetadata(9, "", -1)}]
    assert proc.offsets.pending() == {TP: 5}


@pytest.mark.timeout(10)
def test_group_without_topics_is_a_config_error_not_a_key_error() -> None:
    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})
    group = app.consumer_group("empty")
    with pytest.raises(ConfigError, match="empty"):
        GroupProcessor(Runtime.of(app), group, threading.Event()).run()
