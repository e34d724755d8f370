"""Flow control against the real broker, Redis, a celery worker and a `kbridge listen` subprocess.

One listener runs every group of tests/apps/flow_app.py; each test owns its topics.
FLOW_FULL=1 runs the issue's full sizes (1,000-message throttle, ...) instead of the CI ones.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from kafka import KafkaProducer

from kbridge.testing import processes
from kbridge.testing.kafka import committed_offsets, create_topics, read_topic, wait_until
from kbridge.testing.services import KafkaService, RedisService

APP = "tests.apps.flow_app:app"
FULL = os.environ.get("FLOW_FULL") == "1"
TOPICS = ("delayed", "undelayed", "expire", "throttle", "tick-celery", "tick-inline", "breaker")


@dataclass
class FlowRun:
    run: str
    kafka: KafkaService
    redis_url: str
    listener: processes.Process | None = None

    def topic(self, suffix: str) -> str:
        return f"{self.run}.{suffix}"

    @property
    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def lags(self, topic: str) -> dict[int, float]:
        """offset -> ms from the message's timestamp to its perform() start (partition 0)."""
        raw = self.store.hgetall(f"{self.run}:lag:{self.topic(topic)}")
        return {int(k.decode().split(":")[1]): float(v) for k, v in raw.items()}

    def produce(self, topic: str, count: int, timestamp_ms: int | None = None, value: bytes = b'{"n": 1}',
                values: list[bytes] | None = None) -> None:
        producer = KafkaProducer(bootstrap_servers=self.kafka.bootstrap, linger_ms=5, acks="all")
        try:
            futures = [producer.send(self.topic(topic), value=v, timestamp_ms=timestamp_ms)
                       for v in (values if values is not None else [value] * count)]
            producer.flush()
            for f in futures:
                f.get(timeout=30)
        finally:
            producer.close()

    def enqueued(self, topic: str) -> list[tuple[float, int]]:
        """(time.time(), messages) of every hand-over of topic, as the listener saw it confirmed."""
        entries = self.store.lrange(f"{self.run}:enqueued:{self.topic(topic)}", 0, -1)
        return [(float(t), int(n)) for t, n in (e.split(b":") for e in entries)]

    def committed(self, topic: str, group: str | None = None) -> int:
        offsets = committed_offsets(self.kafka.bootstrap, f"flow-{self.run}_{group or self.topic(topic)}")
        return sum(o for tp, o in offsets.items() if tp.topic == self.topic(topic))


@pytest.fixture(scope="module")
def flow(kbridge_kafka: KafkaService, kbridge_redis: RedisService) -> Iterator[FlowRun]:
    run = FlowRun(uuid.uuid4().hex[:8], kbridge_kafka, kbridge_redis.url)
    create_topics(kbridge_kafka.bootstrap, [run.topic(t) for t in TOPICS])
    env = {"FLOW_RUN": run.run, "FLOW_KAFKA": kbridge_kafka.bootstrap, "FLOW_REDIS": kbridge_redis.url}
    worker = processes.celery_worker("tests.apps.flow_app:celery_app", env, [f"kbridge-flow-{run.run}"]).start()
    run.listener = processes.listener(APP, env, name="flow-listener").start()
    try:
        worker.wait_for_log("ready.", timeout=60)
        listener = run.listener
        wait_until(lambda: all(f"{run.topic(t)}-0" in listener.log() for t in TOPICS), 60,
                   what="every group's partitions assigned", alive=[listener])
        yield run
    finally:
        run.listener.stop()
        worker.stop()


def test_expired_messages_are_committed_and_counted_not_performed(flow: FlowRun) -> None:
    hour_ago = int((time.time() - 3600) * 1000)
    flow.produce("expire", 500, timestamp_ms=hour_ago)
    flow.produce("expire", 500)
    wait_until(lambda: flow.committed("expire") == 1000, 60, what="commit to the end of the topic")
    wait_until(lambda: len(flow.lags("expire")) >= 500, 60, what="the fresh messages performed")
    time.sleep(1)  # nothing expired may still arrive
    assert sorted(flow.lags("expire")) == list(range(500, 1000))
    assert int(flow.store.get(f"{flow.run}:expired") or 0) == 500  # the `expired` event, from the listener


def test_delayed_topic_waits_while_the_undelayed_one_flows(flow: FlowRun) -> None:
    count = 200 if FULL else 50
    produced = time.time()
    flow.produce("delayed", count)
    flow.produce("undelayed", count)
    wait_until(lambda: len(flow.lags("delayed")) == count and len(flow.lags("undelayed")) == count, 60,
               what="both topics performed")
    delayed = flow.lags("delayed")
    undelayed_handed = max(t for t, _ in flow.enqueued("undelayed")) - produced
    print(f"[delay_by=3] {count}+{count} messages: delayed perform lag min={min(delayed.values()):.0f}ms; "
          f"undelayed all handed over {undelayed_handed:.2f}s after producing began, "
          f"delayed first handed over {min(t for t, _ in flow.enqueued('delayed')) - produced:.2f}s after")
    assert min(delayed.values()) >= 3000  # every perform starts >= 3 s after its message's timestamp
    assert undelayed_handed < 3.0  # the other topic flowed while the delayed partition was paused
    assert sum(n for _, n in flow.enqueued("undelayed")) == count


def test_throttle_hands_over_at_most_50_per_second(flow: FlowRun) -> None:
    count = 1000 if FULL else 200
    flow.produce("throttle", count)
    wait_until(lambda: sum(n for _, n in flow.enqueued("throttle")) == count, count / 50 + 30,
               what="every message handed over")
    events = flow.enqueued("throttle")
    busiest = max(sum(n for t, n in events if start <= t < start + 0.98) for start, _ in events)
    seconds = events[-1][0] - events[0][0]
    print(f"[throttle=(50, 1.0)] {count} handed over, first to last in {seconds:.1f}s "
          f"({(count - 50) / seconds:.1f}/s after the first window); "
          f"busiest second {busiest}")
    assert busiest <= 50
    assert seconds >= (count - 50) / 50 * 0.98


def test_pattern_route_picks_up_a_topic_created_while_listening(flow: FlowRun) -> None:
    topic = "dyn.created-later"
    create_topics(flow.kafka.bootstrap, [flow.topic(topic)])
    flow.produce(topic, 20)
    wait_until(lambda: len(flow.lags(topic)) == 20, 60, what="the new topic's messages performed")
    wait_until(lambda: flow.committed(topic, "patterns") == 20, 30, what="its commit")


def test_ticks_run_in_the_worker_with_celery_and_in_the_listener_inline(flow: FlowRun) -> None:
    def ticks(topic: str) -> list[list[str]]:
        return [e.decode().split(":") for e in flow.store.lrange(f"{flow.run}:ticks:{flow.topic(topic)}", 0, -1)]

    wait_until(lambda: len(ticks("tick-celery")) >= 2 and len(ticks("tick-inline")) >= 2, 30, what="ticks")
    assert flow.listener is not None and flow.listener.proc is not None
    listener_pid = str(flow.listener.proc.pid)
    assert all(t[:2] == ["0", "0"] for t in ticks("tick-celery") + ticks("tick-inline"))  # partition 0, no params
    assert all(t[2] != listener_pid for t in ticks("tick-celery"))
    assert {t[2] for t in ticks("tick-inline")} == {listener_pid}


def test_breaker_holds_the_route_before_the_poison_reaches_the_dead_letter_topic(flow: FlowRun) -> None:
    count = 2000 if FULL else 1000
    values = [b'{"ok": 1}' if i % 10 == 0 else b"{poison" for i in range(count)]  # 90% poison
    flow.produce("breaker", count, values=values)
    assert flow.listener is not None
    flow.listener.wait_for_log("DEAD-LETTER BREAKER TRIPPED", timeout=60)
    time.sleep(2)
    letters = read_topic(flow.kafka.bootstrap, f"{flow.topic('breaker')}.dlq", count, timeout=5)
    committed = flow.committed("breaker")
    print(f"[breaker] {len(letters)} of {count * 9 // 10} poison messages dead-lettered; committed {committed}")
    assert 50 <= len(letters) <= 150
    assert committed < count // 4
