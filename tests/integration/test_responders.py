"""Producing on real services: responders inside a prefork celery worker, produce(), and the topic mapper.

tests/apps/responders_app.py runs under PrefixMapper("acme-<run>."): its routes and
responders use logical names, and these tests check Kafka only ever sees the prefixed ones.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

import kbridge
import kbridge.producer
from kbridge import KBridge, PrefixMapper, ProduceError, Responder, ResponderError, ResponderTopic
from kbridge.dlq import ERROR_CLASS, ERROR_MESSAGE, ORIGIN_TOPIC
from kbridge.testing import processes
from kbridge.testing.kafka import create_topics, produce
from kbridge.testing.services import KafkaService, RedisService, free_port

pytestmark = pytest.mark.integration

APP = "tests.apps.responders_app:app"
CELERY_APP = "tests.apps.responders_app:celery_app"
# Logical names; Kafka has them with the run's prefix. receipts and elsewhere are never created:
# the responders that would send to them must fail validation and send nothing.
TOPICS = ["orders", "confirmations", "audit", "forgetful", "stray", "failing", "direct", "async", "bad-partition",
          "forgetful.dlq", "stray.dlq", "failing.dlq"]


@dataclass
class ResponderRun:
    run: str
    kafka: KafkaService
    broker_url: str

    @property
    def prefix(self) -> str:
        return f"acme-{self.run}."

    @property
    def env(self) -> dict[str, str]:
        return {"RESPONDERS_RUN": self.run, "RESPONDERS_KAFKA": self.kafka.bootstrap,
                "RESPONDERS_BROKER": self.broker_url}

    def kafka_name(self, logical: str) -> str:
        return f"{self.prefix}{logical}"

    def send(self, logical: str, payloads: list[dict[str, Any]]) -> None:
        produce(self.kafka.bootstrap, self.kafka_name(logical), [json.dumps(p).encode() for p in payloads])

    def listener(self, group: str) -> processes.Process:
        return processes.listener(APP, self.env, groups=[group], name=f"listener-{group}").start()

    def read_until(self, logical: str, done: Callable[[list[Any]], bool], timeout: float = 60) -> list[Any]:
        return read_until(self.kafka.bootstrap, self.kafka_name(logical), done, timeout)

    def topics(self) -> set[str]:
        admin = KafkaAdminClient(bootstrap_servers=self.kafka.bootstrap)
        try:
            return set(admin.list_topics())
        finally:
            admin.close()


def read_until(bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout: float = 60) -> list[Any]:
    """Every record of a one-partition topic from the beginning, until done(records) or the timeout."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    tp = TopicPartition(topic, 0)
    records: list[Any] = []
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s reading {topic}; got {len(records)}: "
                                     f"{[r.value[:80] for r in records[:10]]}")
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def values(records: list[Any]) -> list[Any]:
    return [json.loads(r.value) for r in records]


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="module")
def responders(kbridge_kafka: KafkaService, kbridge_redis: RedisService) -> ResponderRun:
    run = ResponderRun(uuid.uuid4().hex[:8], kbridge_kafka, kbridge_redis.url)
    create_topics(kbridge_kafka.bootstrap, [run.kafka_name(t) for t in TOPICS], partitions=1)
    return run


@pytest.fixture(scope="module")
def responders_worker(responders: ResponderRun) -> Iterator[processes.Process]:
    """One real prefork celery worker (-c 2) for this module's app and queue."""
    worker = processes.celery_worker(CELERY_APP, responders.env, [f"kbridge-responders-{responders.run}"],
                                     name="responders-worker").start()
    try:
        worker.wait_for_log("ready.", timeout=60)
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def local_app(responders: ResponderRun) -> KBridge:
    """This process's own app under the same prefix, for produce() and responders called directly."""
    return KBridge(client_id=f"resp-test-{responders.run}", kafka={"bootstrap_servers": responders.kafka.bootstrap},
                   topic_mapper=PrefixMapper(responders.prefix), produce_timeout=15)


# -- responders in the worker --------------------------------------------------------------------------------


def test_a_consumer_responds_to_another_topic_from_a_prefork_worker(
    responders: ResponderRun, responders_worker: processes.Process
) -> None:
    orders = [{"id": i, "audit": i % 2 == 0} for i in range(20)]
    responders.send("orders", orders)
    listener = responders.listener("orders")
    try:
        confirmations = responders.read_until("confirmations", lambda rs: len(rs) >= len(orders))
        audits = responders.read_until("audit", lambda rs: len(rs) >= len(orders) // 2)
    finally:
        assert listener.stop() == 0, listener.log()[-3000:]
    got = values(confirmations)
    assert sorted(c["order"] for c in got) == list(range(20))
    assert {r.key for r in confirmations} == {str(i).encode() for i in range(20)}
    pids = {c["pid"] for c in got}
    # Sent from the worker's pool processes: children of the celery main process, not the listener.
    assert {ppid(pid) for pid in pids} == {responders_worker.pid}, (pids, responders_worker.pid)
    # The route kept its logical name; the message came from (and responses went to) the prefixed topics.
    assert {(c["route"], c["kafka_topic"]) for c in got} == {("orders", responders.kafka_name("orders"))}
    assert sorted(r.value for r in audits) == sorted(f"order {i} audited".encode() for i in range(0, 20, 2))
    assert {dict(r.headers)["pid"] for r in audits} <= {str(p).encode() for p in pids}
    print(f"\nresponders: 20 orders -> 20 confirmations and 10 async audits from worker pids {sorted(pids)}")


def test_responder_validation_errors_send_nothing_and_dead_letter_the_message(
    responders: ResponderRun, responders_worker: processes.Process, local_app: KBridge
) -> None:
    responders.send("forgetful", [{"id": 1001}])
    responders.send("stray", [{"id": 1002}])
    listeners = [responders.listener("forgetful"), responders.listener("stray")]
    try:
        forgotten = responders.read_until("forgetful.dlq", lambda rs: len(rs) >= 1)[0]
        strayed = responders.read_until("stray.dlq", lambda rs: len(rs) >= 1)[0]
    finally:
        for listener in listeners:
            assert listener.stop() == 0, listener.log()[-3000:]
    for record, problem in ((forgotten, "required topic 'receipts' was not used"),
                            (strayed, "topic 'elsewhere' is not declared in StrayResponder.topics")):
        headers = dict(record.headers)
        assert headers[ERROR_CLASS] == b"kbridge.responder.ResponderError"
        assert problem in headers[ERROR_MESSAGE].decode()
    # Both failed after perform() ran; had they sent anything, it would come before this marker.
    marker = local_app.produce("confirmations", {"marker": responders.run})
    confirmations = responders.read_until("confirmations", lambda rs: any(r.offset == marker.offset for r in rs))
    assert not [c for c in values(confirmations) if c.get("order") in (1001, 1002)]
    assert not {responders.kafka_name("receipts"), responders.kafka_name("elsewhere")} & responders.topics()


def test_a_responder_called_directly_reports_every_problem_and_sends_nothing(
    responders: ResponderRun, local_app: KBridge
) -> None:
    class Careless(Responder):
        topics = ["direct", ResponderTopic("async", delivery="async")]

        def respond(self) -> None:
            self.respond_to("direct", {"careless": True})
            self.respond_to("nowhere", {"careless": True})  # and the required "async" is never used

    with pytest.raises(ResponderError) as info:
        Careless(local_app).call()
    assert len(info.value.problems) == 2
    marker = local_app.produce("direct", {"marker": "after-careless"})
    records = responders.read_until("direct", lambda rs: any(r.offset == marker.offset for r in rs))
    assert not [v for v in values(records) if v.get("careless")]


# -- produce() ------------------------------------------------------------------------------------------------


def test_produce_sync_async_and_flush(responders: ResponderRun, local_app: KBridge) -> None:
    delivery = local_app.produce("async", {"n": "sync"}, key="k-sync", headers={"origin": "test"})
    assert (delivery.topic, delivery.kafka_topic, delivery.partition) == (
        "async", responders.kafka_name("async"), 0)
    futures = [local_app.produce_async("async", {"n": n}, key=f"k-{n}") for n in range(200)]
    local_app.flush()
    assert all(f.done() for f in futures)
    offsets = [f.result(0).offset for f in futures]
    assert offsets == list(range(delivery.offset + 1, delivery.offset + 201))
    raw = local_app.produce_async("async", b"\x00\xffraw", serializer=lambda v: b"never used").result(15)

    records = responders.read_until("async", lambda rs: any(r.offset == raw.offset for r in rs))
    mine = [r for r in records if r.offset >= delivery.offset]
    assert (mine[0].key, dict(mine[0].headers), json.loads(mine[0].value)) == (
        b"k-sync", {"origin": b"test"}, {"n": "sync"})
    assert [json.loads(r.value)["n"] for r in mine[1:201]] == list(range(200))
    assert mine[-1].value == b"\x00\xffraw"


def test_module_level_produce_uses_the_default_app(responders: ResponderRun, local_app: KBridge) -> None:
    saved = kbridge.producer._default_app
    kbridge.producer.set_default_app(local_app)
    try:
        delivery = kbridge.produce("direct", {"via": "kbridge.produce"})
        future = kbridge.produce_async("direct", {"via": "kbridge.produce_async"})
        kbridge.flush()
    finally:
        kbridge.producer._default_app = saved
    assert delivery.kafka_topic == responders.kafka_name("direct") and future.result(0).offset == delivery.offset + 1
    records = responders.read_until("direct", lambda rs: any(r.offset == delivery.offset + 1 for r in rs))
    assert [json.loads(r.value)["via"] for r in records[-2:]] == ["kbridge.produce", "kbridge.produce_async"]


def test_a_failed_produce_names_the_topic_and_the_cause(responders: ResponderRun, local_app: KBridge) -> None:
    with pytest.raises(ProduceError) as info:
        local_app.produce("bad-partition", {"x": 1}, partition=7)
    assert str(info.value).startswith(
        f"could not produce to topic 'bad-partition' (Kafka topic '{responders.kafka_name('bad-partition')}'): "
    )
    assert "Unrecognized partition 7" in str(info.value)

    nowhere = KBridge(client_id="resp-nowhere", kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},
                      produce_timeout=2)
    started = time.monotonic()
    with pytest.raises(ProduceError, match="could not produce to topic 'orders': "):
        nowhere.produce("orders", {"x": 1})
    assert time.monotonic() - started < 10  # produce_timeout bounds reaching Kafka too, not only the ack
    nowhere.producer.close()


# -- the topic mapper end to end -------------------------------------------------------------------------------


def test_dead_letters_of_a_logical_route_go_to_the_mapped_dlq(
    responders: ResponderRun, responders_worker: processes.Process
) -> None:
    responders.send("failing", [{"id": 1}, {"id": 2}])
    listener = responders.listener("failing")
    try:
        letters = responders.read_until("failing.dlq", lambda rs: len(rs) >= 2)
    finally:
        assert listener.stop() == 0, listener.log()[-3000:]
    assert sorted(v["id"] for v in values(letters)) == [1, 2]  # two pool processes: either may finish first
    for record in letters:
        headers = dict(record.headers)
        assert headers[ORIGIN_TOPIC] == responders.kafka_name("failing").encode()
        assert headers[ERROR_CLASS] == b"builtins.RuntimeError"
    topics = responders.topics()
    assert responders.kafka_name("failing.dlq") in topics
    assert not {"failing", "failing.dlq", "orders", "confirmations"} & topics, "an unmapped name reached Kafka"
    assert os.getpid() != responders_worker.pid
