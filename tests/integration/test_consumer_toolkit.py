"""Batch caps, manual offsets and callbacks on the real broker, Redis and a real celery worker.

The app is tests/apps/toolkit_app.py; its consumers record what they saw in Redis.
The last test runs the same app's routes through the in-memory TestClient, the way a
user's own test would, and checks that it predicts what the broker runs showed.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from kafka import KafkaProducer, TopicPartition

from kbridge.testing import TestClient, processes
from kbridge.testing.kafka import committed_offsets, create_topics, end_offsets, produce, wait_until
from kbridge.testing.services import KafkaService, RedisService

pytestmark = pytest.mark.integration

APP = "tests.apps.toolkit_app:app"
CELERY_APP = "tests.apps.toolkit_app:celery_app"
BATCH_CAP = 7  # toolkit_app.BATCH_CAP


@dataclass
class Toolkit:
    run: str
    kafka: KafkaService
    redis_url: str

    @property
    def env(self) -> dict[str, str]:
        return {"TOOLKIT_RUN": self.run, "TOOLKIT_KAFKA": self.kafka.bootstrap, "TOOLKIT_REDIS": self.redis_url}

    def topic(self, suffix: str) -> str:
        return f"{self.run}.{suffix}"

    def committed(self, topic: str) -> dict[TopicPartition, int]:
        return committed_offsets(self.kafka.bootstrap, f"toolkit-{self.run}_{topic}")  # app.topic(): group = topic

    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def listener(self, topic: str, name: str = "listener") -> processes.Process:
        return processes.listener(APP, self.env, groups=[topic], name=name).start()

    def stop(self, listener: processes.Process) -> None:
        listener.signal(signal.SIGTERM)
        assert listener.wait(60) == 0, listener.log()[-3000:]


@pytest.fixture(scope="module")
def toolkit(kbridge_kafka: KafkaService, kbridge_redis: RedisService) -> Iterator[Toolkit]:
    yield Toolkit(uuid.uuid4().hex[:8], kbridge_kafka, kbridge_redis.url)


@pytest.fixture(scope="module")
def worker(toolkit: Toolkit) -> Iterator[processes.Process]:
    proc = processes.celery_worker(CELERY_APP, toolkit.env, [f"kbridge-toolkit-{toolkit.run}"]).start()
    try:
        proc.wait_for_log("ready.", timeout=90)
        yield proc
    finally:
        proc.stop()


def test_batch_consuming_with_a_cap_round_trip(toolkit: Toolkit, worker: processes.Process) -> None:
    """Tasks hold at most BATCH_CAP accepted messages of one partition, in offset order; all arrive once."""
    topic = toolkit.topic("batch")
    create_topics(toolkit.kafka.bootstrap, [topic], 2)
    values = [{"n": i, "skip": i % 9 == 0} for i in range(300)]
    producer = KafkaProducer(bootstrap_servers=toolkit.kafka.bootstrap, linger_ms=5, acks="all")
    futures = [producer.send(topic, json.dumps(v).encode()) for v in values]
    producer.flush()
    placed = {}  # (partition, offset) -> n, for accepted messages
    written: dict[int, list[int]] = {}
    for value, future in zip(values, futures, strict=True):
        md = future.get(timeout=30)
        written.setdefault(md.partition, []).append(md.offset)
        if not value["skip"]:
            placed[(md.partition, md.offset)] = value["n"]
    producer.close()

    listener = toolkit.listener(topic)
    store = toolkit.store()

    def batches() -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(b) for b in store.lrange(f"{toolkit.run}:batches", 0, -1)]

    try:
        wait_until(lambda: sum(len(b["offsets"]) for b in batches()) >= len(placed), 120,
                   what=f"{len(placed)} batched performs", alive=[listener, worker])
        wait_until(lambda: toolkit.committed(topic) == end_offsets(written, topic), 60, what="all committed")
    finally:
        toolkit.stop(listener)

    got = batches()
    sizes = [len(b["offsets"]) for b in got]
    print(f"\n{topic}: produced={len(values)} accepted={len(placed)} tasks={len(got)} sizes={sorted(set(sizes))}")
    assert max(sizes) == BATCH_CAP and min(sizes) >= 1, sizes
    seen = []
    for b in got:
        assert len(b["partitions"]) == 1, b  # one partition per task
        assert b["offsets"] == sorted(b["offsets"]), b  # offset order within the task
        partition = b["partitions"][0]
        for offset, payload in zip(b["offsets"], b["payloads"], strict=True):
            assert placed[(partition, offset)] == payload["n"]  # params_batch carries each message's own payload
            seen.append((partition, offset))
    assert sorted(seen) == sorted(placed), "every accepted message exactly once, no filtered one"


def test_manual_offsets_commit_only_what_perform_marked(toolkit: Toolkit) -> None:
    """Marks on 0..11 only: the commit stops at 12 though 0..19 ran, survives a restart; a later mark passes it."""
    topic = toolkit.topic("manual")
    tp = TopicPartition(topic, 0)
    create_topics(toolkit.kafka.bootstrap, [topic], 1)
    produce(toolkit.kafka.bootstrap, topic, [json.dumps({"mark": i < 12}).encode() for i in range(20)])
    store = toolkit.store()

    def seen() -> dict[int, int]:
        return {int(k): int(v) for k, v in store.hgetall(f"{toolkit.run}:manual:seen").items()}

    first = toolkit.listener(topic, "listener-1")
    try:
        wait_until(lambda: len(seen()) == 20, 90, what="20 performs", alive=[first])
        wait_until(lambda: toolkit.committed(topic) == {tp: 12}, 30, what="commit of the marks", alive=[first])
        time.sleep(3)  # several more poll loops: nothing unmarked may be committed meanwhile
        assert toolkit.committed(topic) == {tp: 12}  # mid-batch (batches are 10..14), so it came from a mark
    finally:
        toolkit.stop(first)
    assert toolkit.committed(topic) == {tp: 12}, "the final commit at stop adds nothing unmarked"
    assert set(seen().values()) == {1}

    second = toolkit.listener(topic, "listener-2")  # unmarked 12..19 are read again; 0..11 are not
    try:
        wait_until(lambda: all(seen()[o] == 2 for o in range(12, 20)), 90, what="redelivery of 12..19",
                   alive=[second])
        time.sleep(2)
        assert all(seen()[o] == 1 for o in range(12)) and toolkit.committed(topic) == {tp: 12}

        # Karafka-style: marking offset 22 commits 23, and so counts the unmarked 12..19 as consumed.
        produce(toolkit.kafka.bootstrap, topic, [json.dumps({"mark": True}).encode()] * 3)
        wait_until(lambda: toolkit.committed(topic) == {tp: 23}, 60, what="commit past a later mark", alive=[second])
    finally:
        toolkit.stop(second)
    assert seen() == {**{o: 1 for o in range(12)}, **{o: 2 for o in range(12, 20)}, 20: 1, 21: 1, 22: 1}


def test_callbacks_fire_in_order_and_a_raising_one_loses_nothing(toolkit: Toolkit) -> None:
    topic = toolkit.topic("callbacks")
    create_topics(toolkit.kafka.bootstrap, [topic], 2)
    written = produce(toolkit.kafka.bootstrap, topic, [b"{}"] * 40)
    store = toolkit.store()

    def events() -> list[str]:
        return [e.decode() for e in store.lrange(f"{toolkit.run}:callbacks", 0, -1)]

    listener = toolkit.listener(topic)
    try:
        wait_until(lambda: sum(e.startswith("perform") for e in events()) >= 40, 90, what="40 performs",
                   alive=[listener])
        wait_until(lambda: toolkit.committed(topic) == end_offsets(written, topic), 30, what="all committed")
    finally:
        toolkit.stop(listener)
    log = listener.log()
    assert "broken after_fetch, on purpose" in log and "ignored" in log

    got = events()
    assert got[-1] == "before_stop" and got.count("before_stop") == 1
    ticks, fetched = 0, {p: [] for p in written}  # type: ignore[var-annotated]
    i = 0
    while got[i] != "before_stop":  # the grammar: (before_poll (after_fetch perform*)* after_poll)* before_stop
        assert got[i] == "before_poll 0", got[i:i + 5]
        i += 1
        while got[i].startswith("after_fetch"):
            _, partition, offsets = got[i].split(" ", 2)
            batch = json.loads(offsets)
            assert batch == list(range(batch[0], batch[0] + len(batch)))  # the fetched partition batch, in order
            i += 1
            performs = got[i:i + len(batch)]
            assert performs == [f"perform {partition} {o}" for o in batch]  # handled right after its fetch
            fetched[int(partition)] += batch
            i += len(batch)
        assert got[i] == "after_poll", got[i:i + 5]
        i += 1
        ticks += 1
    assert fetched == written, "after_fetch saw every message exactly once"
    print(f"\n{topic}: {ticks} polls, {sum(e.startswith('after_fetch') for e in got)} fetches")


def test_the_in_memory_client_predicts_the_broker_runs(toolkit: Toolkit, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's test, written with kbridge.testing only: the same routes, no Kafka, no Celery."""
    from tests.apps import toolkit_app

    monkeypatch.setattr(toolkit_app, "_redis", toolkit.store())  # the consumers record here, not in a shared Redis
    client = TestClient(toolkit_app.app)
    manual = client.publish_many(f"{toolkit_app.RUN}.manual", [{"mark": i < 12} for i in range(20)])
    assert len(manual.performed) == 20 and manual.committed == 12
    assert [len(c.params_batch) for c in manual.consumers] == [5, 5, 5, 5]

    batch = client.publish_many(f"{toolkit_app.RUN}.batch", [{"n": i, "skip": i % 9 == 0} for i in range(20)])
    assert [len(c.params_batch) for c in batch.consumers] == [7, 7, 3]
    assert [p.payload["n"] for p in batch.filtered] == [0, 9, 18]
