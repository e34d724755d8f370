"""The delivery ledger on a real Redis: a task lost between BRPOP and unacked comes back, once."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from celery import Celery

from kbridge.backends.celery import ledger
from kbridge.backends.celery.redis_pipeline import RedisPipelinePublisher
from kbridge.interchange import to_wire
from kbridge.params import Params
from kbridge.testing.services import RedisService

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(kbridge_redis: RedisService):  # type: ignore[no-untyped-def]
    queue = f"ledger-{uuid.uuid4().hex[:8]}"
    app = Celery("ledger", broker=kbridge_redis.url)
    publisher = RedisPipelinePublisher(app, redelivery_after=0.5)
    client = redis.Redis.from_url(kbridge_redis.url)

    def publish(n: int) -> list[str]:
        argsets = [["g/t", [to_wire(Params(topic="t", partition=0, offset=i, raw_payload=b"{}"))]] for i in range(n)]
        publisher.publish("kbridge.perform", queue, "g/t", argsets, 15, 5)
        return [json.loads(m)["headers"]["id"] for m in client.lrange(queue, 0, -1)[::-1]]

    yield queue, publisher, client, publish
    client.delete(queue, ledger.ledger_key(queue), ledger.index_key(queue))


def test_each_enqueued_task_has_a_ledger_entry(setup) -> None:  # type: ignore[no-untyped-def]
    queue, _, client, publish = setup
    ids = publish(3)
    assert set(k.decode() for k in client.hkeys(ledger.ledger_key(queue))) == set(ids)
    assert json.loads(client.lindex(queue, -1))["headers"][ledger.HEADER] == queue


def test_a_task_lost_in_the_delivery_window_is_requeued_once(setup) -> None:  # type: ignore[no-untyped-def]
    queue, publisher, client, publish = setup
    lost, queued, running, done = publish(4)
    client.delete(queue)  # a worker took all four off the queue (BRPOP); then:
    entry = {i: json.loads(client.hget(ledger.ledger_key(queue), i)) for i in (queued, running)}
    client.hset("unacked", f"tag-{running}", json.dumps([entry[running], "", queue]))  # 'running' reached unacked
    entry[queued]["headers"]["retries"] = 1  # 'queued' waits as a retry, in a new envelope
    client.lpush(queue, json.dumps(entry[queued]))
    ledger.clear(client, queue, done)  # 'done' finished and closed its entry; 'lost' is nowhere

    time.sleep(0.6)
    assert publisher.reap() == 0, "a first miss is only a suspicion: a close may still be on its way"
    time.sleep(ledger.SUSPECT_GRACE)
    assert publisher.reap() == 1
    ids = [json.loads(m)["headers"]["id"] for m in client.lrange(queue, 0, -1)]
    assert ids.count(lost) == 1 and running not in ids and done not in ids
    assert publisher.reap() == 0, "re-armed: not pushed again at once"
    client.hdel("unacked", f"tag-{running}")
