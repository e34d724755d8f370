"""Dead letters on the worker side, against a broker of this module's own (the outage test restarts it).

Each scenario prints produced / performed / duplicated / lost / dead-lettered.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery
from kafka import KafkaAdminClient

from kbridge.dlq import ATTEMPTS, ERROR_CLASS, ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC, TRUNCATED
from kbridge.interchange import to_wire
from kbridge.params import Params
from kbridge.testing import processes
from kbridge.testing.kafka import create_topics, produce, read_topic, wait_until
from kbridge.testing.services import KAFKA_ENV, KafkaService, RedisService, kafka_service

from .conftest import CELERY_APP, PipelineRun
from .test_worker_faults import run_listener

pytestmark = pytest.mark.integration


@dataclass
class DeadLetterRun(PipelineRun):
    @property
    def env(self) -> dict[str, str]:
        # Short, so a dead letter that meets a Kafka outage fails and is retried within the test.
        return {**super().env, "PIPELINE_DEAD_LETTER_TIMEOUT": "3"}


@pytest.fixture(scope="module")
def pipeline(kbridge_redis: RedisService) -> Iterator[DeadLetterRun]:
    kafka = kafka_service()
    try:
        yield DeadLetterRun(uuid.uuid4().hex[:8], kafka, kbridge_redis.url)
    finally:
        kafka.stop()


def counts(name: str, produced: int, performed: int, dead: int, lost: int) -> None:
    print(f"\n[{name}] produced={produced} performed={performed} duplicated=0 lost={lost} dead_lettered={dead}")


def attempts(pipeline: PipelineRun, topic: str, offset: int) -> int:
    return int(pipeline.store().hget(f"{pipeline.run}:attempts:{topic}", f"0:{offset}") or 0)


def test_max_retries_5_makes_6_attempts_then_dead_letters(pipeline: PipelineRun, celery_worker: processes.Process
                                                          ) -> None:
    topic = pipeline.topic("retries5")
    pipeline.create(topic, 1)
    [offset] = pipeline.produce(topic, [b'{"n": 1}'])[0]
    run_listener(pipeline, topic, lambda: pipeline.committed(topic), "the enqueue to be committed")
    dead = pipeline.dead_letters(topic, 1, timeout=60)
    counts("max-retries-5", 1, 0, len(dead), 1 - len(dead))
    print(f"[max-retries-5] attempts={attempts(pipeline, topic, offset)}")
    assert len(dead) == 1
    assert attempts(pipeline, topic, offset) == 6
    assert dict(dead[0].headers)[ATTEMPTS] == b"6" and dict(dead[0].headers)[ORIGIN_OFFSET] == str(offset).encode()


@pytest.mark.skipif(bool(os.environ.get(KAFKA_ENV)), reason="restarts the broker; needs the embedded one")
def test_kafka_down_during_the_last_attempt_only_the_dead_letter_is_retried(
    pipeline: PipelineRun, celery_worker: processes.Process
) -> None:
    topic = pipeline.topic("dlq-outage")  # max_retries=1: 2 attempts
    pipeline.create(topic, 1)
    [offset] = pipeline.produce(topic, [b'{"n": 1}'])[0]
    store = pipeline.store()
    run_listener(pipeline, topic, lambda: store.llen(f"{pipeline.run}:last-attempt:{topic}"),
                  "the last attempt to start")
    kafka = pipeline.kafka
    assert isinstance(kafka, KafkaService)
    kafka.stop()
    store.set(f"{pipeline.run}:kafka-down", 1)  # the last attempt now fails, and its dead letter meets the outage
    try:
        celery_worker.wait_for_log("could not dead-letter", timeout=60)
        celery_worker.wait_for_log("retrying only the dead-letter step", timeout=30)
    finally:
        kafka.start()  # a fresh in-memory broker on the same port: the letter's topic must exist again
    create_topics(kafka.bootstrap, [f"{topic}.dlq"], 1)
    dead = read_topic(kafka.bootstrap, f"{topic}.dlq", 1, timeout=90)
    made = attempts(pipeline, topic, offset)
    counts("dlq-kafka-outage", 1, 0, len(dead), 1 - len(dead))
    print(f"[dlq-kafka-outage] perform attempts={made} (max_retries+1 = 2)")
    assert len(dead) == 1, celery_worker.log()[-3000:]
    assert made == 2  # perform() did not run again while only the dead letter was retried
    h = dict(dead[0].headers)
    assert (h[ORIGIN_TOPIC], h[ORIGIN_OFFSET], h[ATTEMPTS]) == (topic.encode(), str(offset).encode(), b"2")
    assert h[ERROR_CLASS] == b"builtins.RuntimeError"


def test_a_record_near_kafkas_size_limit_that_fails_is_dead_lettered_and_points_at_the_original(
    pipeline: PipelineRun, celery_worker: processes.Process
) -> None:
    topic = pipeline.topic("huge")
    pipeline.create(topic, 1)
    value = json.dumps({"blob": "x" * (1_048_000 - 12)}).encode()
    assert len(value) == 1_048_000
    [offset] = pipeline.produce(topic, [value])[0]
    run_listener(pipeline, topic, lambda: pipeline.committed(topic), "the enqueue to be committed")
    dead = pipeline.dead_letters(topic, 1, timeout=60)
    counts("huge-record", 1, 0, len(dead), 1 - len(dead))
    assert len(dead) == 1, celery_worker.log()[-3000:]
    h = dict(dead[0].headers)
    assert (h[ORIGIN_TOPIC], h[ORIGIN_PARTITION], h[ORIGIN_OFFSET]) == (topic.encode(), b"0", str(offset).encode())
    whole = dead[0].value == value
    print(f"[huge-record] letter {'whole' if whole else 'cut down'}: {len(dead[0].value)} bytes")
    assert whole or (TRUNCATED in h and value.startswith(dead[0].value))


def test_repeated_header_names_reach_perform_and_the_dead_letter_in_order(
    pipeline: PipelineRun, celery_worker: processes.Process
) -> None:
    topic = pipeline.topic("headers")
    pipeline.create(topic, 1)
    sent = [("dup", b"1"), ("dup", b"2"), ("other", b"x")]
    [offset] = produce(pipeline.kafka.bootstrap, topic, [b"{}"], headers=sent)[0]
    run_listener(pipeline, topic, lambda: pipeline.committed(topic), "the enqueue to be committed")
    dead = pipeline.dead_letters(topic, 1, timeout=60)
    seen = [h.decode() for h in pipeline.store().lrange(f"{pipeline.run}:headers:{topic}:{offset}", 0, -1)]
    assert seen == ["dup=1", "dup=2", "other=x"]
    assert [(k, v) for k, v in dead[0].headers if not k.startswith("kbridge-")] == sent


FORGED = {
    "messages-not-a-list": lambda run, t: [f"pipe-{run}_{t}/{t}", "x"],
    "messages-empty": lambda run, t: [f"pipe-{run}_{t}/{t}", []],
    "message-missing-fields": lambda run, t: [f"pipe-{run}_{t}/{t}", [{"topic": t}]],
    "offset-as-string": lambda run, t: [f"pipe-{run}_{t}/{t}", [{**wire(t), "offset": "77"}]],
    "unknown-route-naming-evil-topic": lambda run, t: [f"pipe-{run}_nope/evil-topic", [wire("evil-topic")]],
}


def wire(topic: str) -> dict:  # type: ignore[type-arg]
    return to_wire(Params(topic=topic, partition=0, offset=7, raw_payload=b'{"evil": true}'))


def test_forged_tasks_never_run_and_land_whole_in_the_unroutable_topic(
    pipeline: PipelineRun, celery_worker: processes.Process
) -> None:
    topic = pipeline.topic("events")
    forger = Celery("forger", broker=pipeline.redis_url)
    for name, args in FORGED.items():
        forger.send_task("kbridge.perform", args=args(pipeline.run, topic), queue=pipeline.queue, task_id=name)
    unroutable = f"pipe-{pipeline.run}.unroutable"
    letters = read_topic(pipeline.kafka.bootstrap, unroutable, len(FORGED), timeout=60)
    where = {dict(r.headers)["kbridge-task-id"].decode(): r for r in letters}
    for name, letter in sorted(where.items()):
        print(f"[forged] {name} -> {unroutable}: {dict(letter.headers)['kbridge-error-message'].decode()[:100]}")
    assert sorted(where) == sorted(FORGED)
    assert all(json.loads(r.value)["args"] == FORGED[name](pipeline.run, topic) for name, r in where.items())
    assert pipeline.seen(topic) == {}
    admin = KafkaAdminClient(bootstrap_servers=pipeline.kafka.bootstrap)
    try:
        assert "evil-topic.dlq" not in admin.list_topics()  # never a topic the forged task named
    finally:
        admin.close()
    counts("forged-tasks", 0, 0, len(letters), 0)


class CeleryEvents(threading.Thread):
    """A real event receiver on the worker's broker, as `celery events` and Flower run one."""

    def __init__(self, broker_url: str) -> None:
        super().__init__(daemon=True)
        self.app = Celery("observer", broker=broker_url)
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.receiver: Any = None

    def run(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.events.append})
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=True)

    def of(self, uuid: str) -> list[str]:
        return [e["type"] for e in list(self.events) if e.get("uuid") == uuid]

    def failed(self, text: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["type"] == "task-failed" and text in e.get("exception", "")]

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.join(10)


def test_celery_reports_a_dead_lettered_and_a_refused_task_as_failed_after_its_retries(
    pipeline: PipelineRun
) -> None:
    """What Flower shows: task-retried for each retry, then task-failed with MessageDeadLettered; a refused
    task fails with TaskRefused. Neither is task-succeeded."""
    topic, queue = pipeline.topic("observed"), f"{pipeline.queue}-observed"  # FailingConsumer, max_retries=2
    pipeline.create(topic, 1)
    broker = pipeline.broker_url or pipeline.redis_url
    events = CeleryEvents(broker)
    events.start()
    worker = processes.celery_worker(CELERY_APP, pipeline.env, [queue], concurrency=1, name="observed")
    worker.argv.append("-E")  # task events, as Flower and `celery events` need
    worker.start()
    try:
        assert events.ready.wait(30)
        [offset] = pipeline.produce(topic, [b'{"n": 1}'])[0]
        Celery("forger", broker=broker).send_task("kbridge.perform", args=["nowhere/x", [{}]], queue=queue,
                                                 task_id="forged-1")
        run_listener(pipeline, topic, lambda: pipeline.committed(topic), "the enqueue to be committed")
        [dead] = wait_until(lambda: events.failed(f"{topic}-0@{offset} dead-lettered to {topic}.dlq"), 90,
                            what="task-failed of the dead-lettered task", alive=[worker])
        wait_until(lambda: "task-failed" in events.of("forged-1"), 60, what="task-failed of the refused task")
    finally:
        events.stop()
        worker.stop()
    print(f"\n[celery-outcome] {dead['uuid']}: {events.of(dead['uuid'])}; exception={dead['exception']}")
    print(f"[celery-outcome] forged-1: {events.of('forged-1')}; "
          f"exception={[e for e in events.events if e.get('uuid') == 'forged-1'][-1]['exception']}")
    assert dead["exception"].startswith("MessageDeadLettered(") and "after 3 attempt(s): RuntimeError" in \
        dead["exception"]
    kinds = events.of(dead["uuid"])
    assert kinds.count("task-retried") == 2 and "task-succeeded" not in kinds, kinds
    forged = [e for e in events.events if e.get("uuid") == "forged-1" and e["type"] == "task-failed"]
    assert forged[0]["exception"].startswith("TaskRefused(") and "UnknownRouteError" in forged[0]["exception"]
    assert "task-succeeded" not in events.of("forged-1")
    assert f"[{dead['uuid']}] raised expected: MessageDeadLettered(" in worker.log()  # no traceback
