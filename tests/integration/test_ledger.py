"""The delivery ledger on a real Redis and Kafka: a task lost between BRPOP and unacked comes back, once,
rebuilt from Kafka; the ledger holds coordinates, not copies."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
import redis
from celery import Celery

from kbridge import BaseConsumer, KBridge
from kbridge.backends.celery import ledger
from kbridge.backends.celery.redis_pipeline import RedisPipelinePublisher
from kbridge.backends.celery.refetch import KafkaRefetch
from kbridge.interchange import params_from_record, to_wire
from kbridge.params import json_deserializer
from kbridge.testing.kafka import create_topics, produce, read_topic
from kbridge.testing.services import KafkaService, RedisService

pytestmark = pytest.mark.integration


class Nothing(BaseConsumer):
    def perform(self) -> None:
        pass


@pytest.fixture
def setup(kbridge_redis: RedisService, kbridge_kafka: KafkaService):  # type: ignore[no-untyped-def]
    run = uuid.uuid4().hex[:8]
    queue, topic = f"ledger-{run}", f"ledger-{run}"
    create_topics(kbridge_kafka.bootstrap, [topic], 1)
    produce(kbridge_kafka.bootstrap, topic, [json.dumps({"n": i, "pad": "x" * 200}).encode() for i in range(6)])
    records = read_topic(kbridge_kafka.bootstrap, topic, 6)
    celery_app = Celery("ledger", broker=kbridge_redis.url)
    app = KBridge(client_id="ledger", kafka={"bootstrap_servers": kbridge_kafka.bootstrap}, celery=celery_app)
    app.topic(topic, consumer=Nothing)
    route = app.routes.find(f"ledger_{topic}/{topic}")
    refetch = KafkaRefetch(app.settings, app.routes)
    publisher = RedisPipelinePublisher(celery_app, redelivery_after=0.5, rebuild=refetch)
    client = redis.Redis.from_url(kbridge_redis.url)

    def publish(offsets: list[int]) -> list[str]:
        wire = [to_wire(params_from_record(records[o], json_deserializer)) for o in offsets]
        publisher.publish("kbridge.perform", queue, route.shadow, [[route.route_id, [w]] for w in wire], 15, 5)
        return [json.loads(m)["headers"]["id"] for m in client.lrange(queue, 0, -1)[::-1]]

    yield queue, publisher, client, publish, route
    refetch.close()
    client.delete(*ledger.keys(queue))


def test_each_enqueued_task_has_an_entry_of_coordinates_only(setup) -> None:  # type: ignore[no-untyped-def]
    queue, _, client, publish, route = setup
    ids = publish([0, 1, 2])
    entries = [e.decode() for e in client.zrange(ledger.ledger_key(queue), 0, -1)]
    code = ledger.place_code(ledger.place(route.route_id, route.name, 0))
    assert entries == [f"{i} {code} {o}" for o, i in enumerate(ids)]  # in queue order
    assert client.hgetall(ledger.places_key(queue)) == {code.encode(): f"{route.route_id} {route.name} 0".encode()}
    assert json.loads(client.lindex(queue, -1))["headers"][ledger.HEADER] == queue
    assert all(len(e) < 48 for e in entries), "an entry is a few coordinates, never the payload"


def test_a_task_lost_in_the_delivery_window_is_rebuilt_from_kafka_and_requeued_once(setup) -> None:  # type: ignore[no-untyped-def]
    queue, publisher, client, publish, route = setup
    lost, running, done, waiting = publish([1, 2, 3, 4])
    for _ in range(3):  # a worker took three off the queue (BRPOP); 'waiting' is still queued
        client.rpop(queue)
    by_id = {e.decode().split(" ")[0]: e for e in client.zrange(ledger.ledger_key(queue), 0, -1)}
    client.hset("unacked", running, "[]")  # 'running' reached unacked (our delivery tag is the task id)
    ledger.clear(client, queue, by_id[done].decode())  # 'done' finished and closed its entry; 'lost' is nowhere

    assert publisher.reap() == 0, "a first miss is only a suspicion: a close may still be on its way"
    time.sleep(ledger.SUSPECT_GRACE + 0.1)
    assert publisher.reap() == 1
    queued = [json.loads(m) for m in client.lrange(queue, 0, -1)]
    ids = [m["headers"]["id"] for m in queued]
    assert ids == [lost, waiting], "the lost task is queued again, under its own id; nothing else is"
    args = json.loads(base64.b64decode(queued[0]["body"]))[0]
    assert args[0] == route.route_id and [m["offset"] for m in args[1]] == [1]
    assert json.loads(args[1][0]["payload"])["n"] == 1, "rebuilt with its payload, read again from Kafka"
    assert queued[0]["headers"]["shadow"] == route.shadow
    assert publisher.reap() == 0, "re-ranked behind 'waiting': not pushed again"
    client.hdel("unacked", running)


def test_the_reaper_looks_at_taken_tasks_only_however_long_the_queue(setup) -> None:  # type: ignore[no-untyped-def]
    queue, publisher, client, publish, _ = setup
    publish([0])
    client.rpop(queue)  # taken, then lost
    for _ in range(20):
        publish([1, 2, 3, 4, 5])  # a backlog behind it
    reaper = publisher.reapers[queue]
    assert reaper._taken_off_the_queue(1000) is not None
    assert len(reaper._taken_off_the_queue(1000) or []) == 1, "only the task taken off the queue is looked at"


def test_a_large_call_streams_in_scripts_and_keeps_queue_and_ledger_in_one_order(setup) -> None:  # type: ignore[no-untyped-def]
    from kbridge.backends.celery.redis_pipeline import CHUNK

    queue, _, client, publish, _ = setup
    n = 2 * CHUNK + 7
    ids = publish([i % 6 for i in range(n)])
    assert len(ids) == len(set(ids)) == n
    ranked = [e.decode().split()[0] for e in client.zrange(ledger.ledger_key(queue), 0, -1)]
    assert ranked == ids, "ledger ranks follow the queue's order across scripts"


def test_a_script_failing_mid_call_reports_the_tasks_redis_confirmed_before_it(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from kbridge.backends.celery.redis_pipeline import CHUNK, PublishError

    queue, publisher, client, publish, route = setup
    chunk = publisher._chunk
    calls = []

    def second_one_broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        argv = chunk(*args, **kwargs)
        calls.append(1)
        return ["", "not a number", *argv[2:]] if len(calls) == 2 else argv

    monkeypatch.setattr(publisher, "_chunk", second_one_broken)
    with pytest.raises(PublishError) as failed:
        publish([i % 6 for i in range(3 * CHUNK)])
    assert failed.value.confirmed == CHUNK, "only the scripts before the failed one count as confirmed"
    # the third script, already sent, ran too: resuming enqueues it again (at least once, never fewer)
    assert client.llen(queue) == 2 * CHUNK
    assert client.zcard(ledger.ledger_key(queue)) == 2 * CHUNK, "every queued task has its entry, and only those"
    monkeypatch.undo()
    publish([0])  # the connection left with unread replies was dropped; the next call works
    assert client.llen(queue) == 2 * CHUNK + 1


def test_a_pooled_connection_that_redis_closed_is_replaced_without_a_failed_enqueue(setup) -> None:  # type: ignore[no-untyped-def]
    queue, publisher, client, publish, _ = setup
    publish([0])
    name = f"kbridge-stale-{uuid.uuid4().hex[:6]}"
    publisher.client.client_setname(name)  # names the pooled connection the next publish takes
    ids = [c["id"] for c in client.client_list() if c.get("name") == name]
    assert ids, "the publisher's connection is in Redis's client list"
    client.client_kill_filter(_id=ids[0])
    publish([1, 2])  # the pool checks a connection before lending it: no PublishError
    assert client.llen(queue) == 3


def test_a_health_check_never_lands_between_the_scripts_of_one_call(setup, kbridge_redis: RedisService,  # type: ignore[no-untyped-def]
                                                                    monkeypatch) -> None:
    from kbridge.backends.celery.redis_pipeline import CHUNK

    queue, _, client, _, route = setup
    checked = RedisPipelinePublisher(Celery("hc", broker=f"{kbridge_redis.url}?health_check_interval=1"), 60)
    chunk = checked._chunk

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(1.2)  # longer than the interval: redis-py would PING before the next command
        return chunk(*args, **kwargs)

    monkeypatch.setattr(checked, "_chunk", slow)
    args = [route.route_id, [{"topic": route.name, "partition": 0, "offset": 0}]]
    checked.publish("kbridge.perform", queue, route.shadow, [args] * (2 * CHUNK + 1), 15, 5)
    assert client.llen(queue) == 2 * CHUNK + 1


def test_a_call_failing_while_building_reports_the_scripts_already_sent(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from kbridge.backends.celery.redis_pipeline import CHUNK, PublishError

    queue, publisher, client, publish, _ = setup
    chunk = publisher._chunk
    calls = []

    def second_one_fails(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("building the second script")
        return chunk(*args, **kwargs)

    monkeypatch.setattr(publisher, "_chunk", second_one_fails)
    with pytest.raises(PublishError) as failed:
        publish([i % 6 for i in range(3 * CHUNK)])
    assert failed.value.confirmed == CHUNK == client.llen(queue), "the script sent before the failure counts"
