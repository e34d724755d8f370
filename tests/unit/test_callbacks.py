"""Consumer callbacks, batch caps and manual offsets on the listener's side (GroupProcessor, fake Kafka consumer).

The real-broker versions are in tests/integration/test_consumer_toolkit.py.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import namedtuple
from typing import Any

import pytest
from kafka import OffsetAndMetadata, TopicPartition

from kbridge import (
    BaseConsumer,
    ConfigError,
    KBridge,
    KBridgeError,
    after_fetch,
    after_poll,
    before_enqueue,
    before_poll,
    before_stop,
)
from kbridge.callbacks import collect
from kbridge.listener.processor import GroupProcessor
from kbridge.params import Params, ParamsBatch
from kbridge.runtime import Runtime

Record = namedtuple("Record", "topic partition offset key value headers timestamp")


class FakeKafkaConsumer:
    """Hands out queued poll results and records commits."""

    def __init__(self) -> None:
        self.polls: list[dict[TopicPartition, list[Record]]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.closed = False
        self.on_poll: list[str] | None = None

    def feed(self, tp: TopicPartition, payloads: list[dict[str, Any]], start: int = 0) -> None:
        self.polls.append({tp: [
            Record(tp.topic, tp.partition, start + i, None, json.dumps(p).encode(), [], 0)
            for i, p in enumerate(payloads)
        ]})

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        if self.on_poll is not None:
            self.on_poll.append("poll")
        return self.polls.pop(0) if self.polls else {}

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def pause(self, *tps: TopicPartition) -> None:
        pass

    def resume(self, *tps: TopicPartition) -> None:
        pass

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def close(self, autocommit: bool = False) -> None:
        self.closed = True


def processor(app: KBridge, group: str, dead_letters: Any = None) -> tuple[GroupProcessor, FakeKafkaConsumer]:
    proc = GroupProcessor(Runtime.of(app, dead_letters), app.routes.groups[group], threading.Event())
    fake = FakeKafkaConsumer()
    proc.consumer = fake  # type: ignore[assignment]
    return proc, fake


def new_app() -> KBridge:
    return KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"})  # inline backend: no Celery app


# -- declaring ------------------------------------------------------------------------------------


class Declares(BaseConsumer):
    @after_fetch
    def fetched(self) -> None: ...

    @before_poll
    @after_poll
    def around(self) -> None: ...

    @before_stop
    def stopping(self) -> None: ...

    def perform(self) -> None: ...


class Inherits(Declares):
    @after_fetch
    def fetched_too(self) -> None: ...


def test_callbacks_are_collected_like_filters_inherited_first_in_definition_order() -> None:
    assert Declares._callbacks == {
        "after_fetch": ("fetched",), "before_poll": ("around",), "after_poll": ("around",), "before_stop": ("stopping",)
    }
    assert Inherits._callbacks["after_fetch"] == ("fetched", "fetched_too")
    assert BaseConsumer._callbacks == {} and collect(BaseConsumer) == {}
    assert Declares._filters == ()  # a callback is not a filter


# -- firing in the listener ------------------------------------------------------------------------


def recording_consumer(log: list[str], fail: set[str] = frozenset()) -> type[BaseConsumer]:  # type: ignore[assignment]
    class Recording(BaseConsumer):
        @after_fetch
        def fetched(self) -> None:
            log.append(f"after_fetch {[p.offset for p in self.params_batch]}")
            if "after_fetch" in fail:
                raise RuntimeError("after_fetch broke")

        @before_poll
        def polling(self) -> None:
            log.append(f"before_poll {len(self.params_batch)}")
            if "before_poll" in fail:
                raise RuntimeError("before_poll broke")

        @after_poll
        def polled(self) -> None:
            log.append("after_poll")
            if "after_poll" in fail:
                raise RuntimeError("after_poll broke")

        @before_stop
        def stopping(self) -> None:
            log.append("before_stop")
            if "before_stop" in fail:
                raise RuntimeError("before_stop broke")

        @before_enqueue
        def keep(self) -> bool:
            log.append(f"filter {self.params.offset}")
            return bool(self.params.payload.get("keep", True))

        def perform(self) -> None:
            log.append(f"perform {[p.offset for p in self.params_batch]}")

    return Recording


def test_callbacks_fire_around_each_poll_in_order() -> None:
    log: list[str] = []
    app = new_app()
    consumer = recording_consumer(log)
    with app.consumer_group("events") as group:
        group.topic("a", consumer=consumer)
        group.topic("b", consumer=consumer)  # same class twice: group-wide callbacks still fire once
    proc, fake = processor(app, "events")
    fake.on_poll = log
    fake.feed(TopicPartition("a", 0), [{}, {"keep": False}])
    proc.tick()
    proc.tick()  # an empty poll still fires before_poll / after_poll
    proc._shutdown()
    assert log == [
        "before_poll 0", "poll", "after_fetch [0, 1]", "filter 0", "filter 1", "perform [0]", "after_poll",
        "before_poll 0", "poll", "after_poll",
        "before_stop",
    ]
    assert fake.commits == [{TopicPartition("a", 0): 2}] and fake.closed


@pytest.mark.parametrize("failing", ["after_fetch", "before_poll", "after_poll", "before_stop"])
def test_a_raising_callback_is_logged_and_loses_nothing(failing: str, caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    app = new_app()
    app.topic("a", consumer=recording_consumer(log, {failing}))
    proc, fake = processor(app, "a")
    fake.feed(TopicPartition("a", 0), [{}, {}, {}])
    with caplog.at_level(logging.ERROR, logger="kbridge.callbacks"):
        proc.tick()
        proc._shutdown()
    assert "perform [0]" in log and "perform [2]" in log
    assert fake.commits == [{TopicPartition("a", 0): 3}] and fake.closed
    assert f"{failing} broke" in caplog.text and "ignored" in caplog.text


def test_group_callbacks_run_once_per_consumer_class_with_the_first_route() -> None:
    seen: list[str] = []

    class One(BaseConsumer):
        @before_poll
        def note(self) -> None:
            seen.append(f"One {self.topic.name}")

        def perform(self) -> None: ...

    class Two(One):
        pass

    class Silent(BaseConsumer):
        def perform(self) -> None: ...

    app = new_app()
    with app.consumer_group("g") as group:
        group.topic("x", consumer=One)
        group.topic("y", consumer=One)
        group.topic("z", consumer=Two)
        group.topic("s", consumer=Silent)
    proc, _ = processor(app, "g")
    proc.tick()
    assert seen == ["One x", "One z"]


def test_after_fetch_sees_every_fetched_message_before_filters_even_on_batch_topics() -> None:
    batches: list[list[int]] = []

    class Batches(BaseConsumer):
        @after_fetch
        def fetched(self) -> None:
            batches.append([p.payload["n"] for p in self.params_batch])

        def perform(self) -> None:
            batches.append([-p.offset for p in self.params_batch])

    app = new_app()
    app.topic("a", consumer=Batches, batch_consuming=True, max_batch_size=2)
    proc, fake = processor(app, "a")
    fake.feed(TopicPartition("a", 0), [{"n": i} for i in range(5)])
    proc.tick()
    assert batches == [[0, 1, 2, 3, 4], [0, -1], [-2, -3], [-4]]


# -- batch cap ------------------------------------------------------------------------------------


class Collects(BaseConsumer):
    runs: list[list[int]] = []

    @before_enqueue
    def keep(self) -> bool:
        return bool(self.params.payload.get("keep", True))

    def perform(self) -> None:
        self.runs.append([p.offset for p in self.params_batch])


def test_max_batch_size_splits_the_accepted_messages_into_ordered_runs() -> None:
    consumer = type("C", (Collects,), {"runs": []})
    app = new_app()
    app.topic("a", consumer=consumer, batch_consuming=True, max_batch_size=3)
    proc, fake = processor(app, "a")
    fake.feed(TopicPartition("a", 0), [{"keep": i != 2} for i in range(9)])
    proc.tick()
    assert consumer.runs == [[0, 1, 3], [4, 5, 6], [7, 8]]
    assert fake.commits == [{TopicPartition("a", 0): 9}]
    assert proc.stats.enqueued == 8 and proc.stats.filtered == 1


def test_without_a_cap_one_run_per_polled_partition_batch() -> None:
    consumer = type("C", (Collects,), {"runs": []})
    app = new_app()
    app.topic("a", consumer=consumer, batch_consuming=True)
    proc, fake = processor(app, "a")
    fake.feed(TopicPartition("a", 0), [{}] * 4)
    proc.tick()
    assert consumer.runs == [[0, 1, 2, 3]]


def test_a_failed_capped_handover_holds_from_its_first_message() -> None:
    class Dead:
        def send(self, *args: Any) -> None:
            raise ConnectionError("no ack")

    class FailsAtFour(Collects):
        def perform(self) -> None:
            if any(p.offset == 4 for p in self.params_batch):
                raise RuntimeError("boom")
            super().perform()

    consumer = type("C", (FailsAtFour,), {"runs": []})
    app = new_app()
    app.topic("a", consumer=consumer, batch_consuming=True, max_batch_size=3, max_retries=0)
    proc, fake = processor(app, "a", Dead())
    proc._backoff = lambda attempts: 60.0  # type: ignore[method-assign]
    fake.feed(TopicPartition("a", 0), [{}] * 8)
    proc.tick()
    assert consumer.runs == [[0, 1, 2]]
    assert [p.offset for p in proc._held[TopicPartition("a", 0)].messages] == [3, 4, 5, 6, 7]
    assert fake.commits == [{TopicPartition("a", 0): 3}]
    assert proc.stats.enqueued == 3


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"batch_consuming": True, "max_batch_size": 0}, "max_batch_size must be an integer > 0"),
        ({"batch_consuming": True, "max_batch_size": True}, "max_batch_size must be an integer > 0"),
        ({"batch_consuming": True, "max_batch_size": 2.5}, "max_batch_size must be an integer > 0"),
        ({"max_batch_size": 10}, "set batch_consuming=True"),
        ({"automatically_mark_as_consumed": "no"}, "automatically_mark_as_consumed must be True or False"),
    ],
)
def test_new_options_are_validated(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        new_app().topic("a", consumer=Collects, **options)


def test_manual_offsets_are_refused_on_the_celery_backend_with_the_reason() -> None:
    from celery import Celery

    app = KBridge(client_id="shop", kafka={"bootstrap_servers": "x:1"}, celery=Celery("t"))
    with pytest.raises(ConfigError) as info:
        app.topic("a", consumer=Collects, automatically_mark_as_consumed=False, max_batch_size=0)
    assert len(info.value.problems) == 2  # reported together with the other problems
    assert "needs backend='inline'" in str(info.value) and "worker that has no Kafka consumer" in str(info.value)
    app.topic("b", consumer=Collects, automatically_mark_as_consumed=False, backend="inline")  # fine inline


# -- manual offsets --------------------------------------------------------------------------------


class Marks(BaseConsumer):
    """Marks a message when its payload says so; Karafka-style, marking o commits o + 1."""

    performed: list[int] = []

    def perform(self) -> None:
        for p in self.params_batch:
            self.performed.append(p.offset)
            if p.payload.get("mark"):
                self.mark_as_consumed(p)


def manual(**options: Any) -> tuple[GroupProcessor, FakeKafkaConsumer, type[Marks]]:
    consumer = type("M", (Marks,), {"performed": []})
    app = new_app()
    app.topic("a", consumer=consumer, automatically_mark_as_consumed=False, **options)
    proc, fake = processor(app, "a")
    return proc, fake, consumer


TPA = TopicPartition("a", 0)


def test_only_marked_offsets_are_committed() -> None:
    proc, fake, consumer = manual()
    fake.feed(TPA, [{"mark": True}, {"mark": True}, {}, {}])
    proc.tick()
    assert consumer.performed == [0, 1, 2, 3]
    assert fake.commits == [{TPA: 2}]  # stops at the first unmarked message, although 2 and 3 ran
    fake.feed(TPA, [{}, {}], start=4)
    proc.tick()
    assert fake.commits == [{TPA: 2}]  # nothing new marked: nothing new committed


def test_marking_a_later_offset_counts_everything_before_it_as_consumed() -> None:
    proc, fake, _ = manual(batch_consuming=True, max_batch_size=2)
    fake.feed(TPA, [{}, {}, {}, {"mark": True}, {}])
    proc.tick()
    assert fake.commits == [{TPA: 4}]


def test_nothing_marked_nothing_committed_even_when_filtered_or_at_shutdown() -> None:
    class Filters(Marks):
        @before_enqueue
        def keep(self) -> bool:
            return False

    app = new_app()
    app.topic("a", consumer=Filters, automatically_mark_as_consumed=False)
    proc, fake = processor(app, "a")
    fake.feed(TPA, [{"mark": True}] * 3)
    proc.tick()
    proc._shutdown()
    assert fake.commits == []


def test_a_mark_below_an_earlier_one_changes_nothing() -> None:
    class Backwards(BaseConsumer):
        def perform(self) -> None:
            self.mark_as_consumed(self.params_batch[-1])
            self.mark_as_consumed(self.params_batch[0])

    app = new_app()
    app.topic("a", consumer=Backwards, automatically_mark_as_consumed=False, batch_consuming=True)
    proc, fake = processor(app, "a")
    fake.feed(TPA, [{}] * 3)
    proc.tick()
    assert fake.commits == [{TPA: 3}]


def test_marks_commit_at_shutdown_and_on_revocation() -> None:
    proc, fake, _ = manual()
    proc.commit = lambda only=None: None  # type: ignore[method-assign]  # a commit that did not happen in tick
    fake.feed(TPA, [{"mark": True}])
    proc.tick()
    del proc.commit
    proc.on_revoked([TPA])
    assert fake.commits == [{TPA: 1}]


def test_mark_as_consumed_refuses_a_message_outside_the_batch_and_is_a_no_op_on_automatic_topics() -> None:
    app = new_app()
    route = app.topic("a", consumer=Marks)
    mine = Params(topic="a", partition=0, offset=5, raw_payload=b"{}")
    consumer = Marks(route, ParamsBatch([mine]))
    consumer.mark_as_consumed(mine)
    assert consumer.marked == [mine]  # recorded, but nothing to commit early: the topic commits by itself
    with pytest.raises(KBridgeError, match="only a message of this run's params_batch"):
        consumer.mark_as_consumed(Params(topic="a", partition=1, offset=5, raw_payload=b"{}"))
