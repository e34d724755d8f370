"""The ordering gate's scripts against a real Redis, step by step: register, claim, park, settle, release.

No Kafka and no worker: the listener's registration and the worker's stage are driven
directly, so each interleaving the pool would produce by chance is produced on purpose.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
import redis
from celery import Celery

from kbridge import BaseConsumer, KBridge
from kbridge.backends.celery import ledger
from kbridge.backends.celery.ordering import OrderingStage, Registrar
from kbridge.interchange import to_wire
from kbridge.params import Params, ParamsBatch
from kbridge.perform import DeadLettered, Job, Performed, Skipped
from kbridge.testing.services import RedisService

pytestmark = pytest.mark.integration


class Noop(BaseConsumer):
    def perform(self) -> None:
        return None


class Request:
    def __init__(self, task_id: str, args: list[Any], queue: str) -> None:
        self.id, self.args, self.retries, self.delivery_info = task_id, args, 1, {"routing_key": queue}


@pytest.fixture
def gate(kbridge_redis: RedisService) -> Any:
    run = uuid.uuid4().hex[:8]
    celery_app = Celery(run, broker=kbridge_redis.url)
    app = KBridge(client_id=f"gate-{run}", kafka={"bootstrap_servers": "x:1"}, celery=celery_app)
    route = app.topic("accounts", consumer=Noop, ordering="key", queue=f"q-{run}")
    client = redis.Redis.from_url(kbridge_redis.url)
    registrar = Registrar(client)

    class Gate:
        def __init__(self) -> None:
            self.route, self.queue, self.client = route, f"q-{run}", client
            self.stage = OrderingStage(celery_app)

        def register(self, *messages: Params) -> None:
            pipe = client.pipeline(transaction=True)
            registrar.adder(route, list(messages))(pipe)
            pipe.execute()

        def job(self, message: Params, task_id: str) -> Job:
            request = Request(task_id, [route.route_id, [to_wire(message)]], self.queue)
            return Job(route, ParamsBatch([message]), delivery=request)

        def queued(self) -> list[dict[str, Any]]:
            return [json.loads(m) for m in client.lrange(self.queue, 0, -1)]

    return Gate()


def msg(offset: int, key: bytes | None = b"acct-1") -> Params:
    return Params(topic="accounts", partition=0, offset=offset, key=key, raw_payload=b"{}")


def test_a_successor_parks_until_its_predecessor_settles_then_is_queued_again(gate: Any) -> None:
    first, second, other = msg(1), msg(2), msg(3, key=b"acct-2")
    gate.register(first, second, other)
    a, b, c = gate.job(first, "a"), gate.job(second, "b"), gate.job(other, "c")
    assert gate.stage.before(a) is None  # the head of its key: runs
    assert gate.stage.before(c) is None  # another key: runs in parallel
    assert gate.stage.before(b) == Skipped("parked", 0)
    assert gate.queued() == []
    gate.stage.after(a, Performed(1))
    [released] = gate.queued()
    assert released["headers"]["retries"] == 1  # parking spent no attempt
    released_id = released["headers"]["id"]
    # the released task has its ledger entry, ranked below every queued task
    entry = ledger.entry(released_id, gate.route.route_id, [to_wire(second)])
    assert released_id != "b" and gate.client.zscore(ledger.ledger_key(gate.queue), entry) == 0
    body = json.loads(base64.b64decode(released["body"]))
    assert body[0][1][0]["offset"] == 2
    assert gate.stage.before(gate.job(second, released["headers"]["id"])) is None  # now it runs


def test_a_retrying_task_holds_its_successors_and_a_dead_lettered_one_releases_them(gate: Any) -> None:
    first, second = msg(10), msg(11)
    gate.register(first, second)
    a = gate.job(first, "a")
    assert gate.stage.before(a) is None
    # a Retry outcome is not settled: the retry (same task id) reclaims, the successor stays parked
    assert gate.stage.before(gate.job(second, "b")) == Skipped("parked", 0)
    assert gate.stage.before(gate.job(first, "a")) is None
    assert gate.queued() == []
    gate.stage.after(a, DeadLettered(failure=None, attempts=3))  # type: ignore[arg-type]
    assert len(gate.queued()) == 1


def test_a_redelivered_copy_parks_behind_the_running_one_and_is_skipped_after(gate: Any) -> None:
    first = msg(20)
    gate.register(first)
    a = gate.job(first, "a")
    assert gate.stage.before(a) is None
    assert gate.stage.before(gate.job(first, "a-copy")) == Skipped("parked", 0)  # a listener re-enqueued it
    assert gate.stage.before(gate.job(first, "a")) is None  # kill -9, redelivered: same id, runs again
    gate.stage.after(a, Performed(1))
    [copy] = gate.queued()
    assert gate.stage.before(gate.job(first, copy["headers"]["id"])) == Skipped("duplicate", 0)
    gate.register(first)  # a listener restarting from an older commit registers it again: ignored
    assert gate.stage.before(gate.job(first, "late")) == Skipped("duplicate", 0)


def test_null_keys_share_one_order(gate: Any) -> None:
    first, second = msg(30, key=None), msg(31, key=None)
    gate.register(first, second)
    assert gate.stage.before(gate.job(first, "a")) is None
    assert gate.stage.before(gate.job(second, "b")) == Skipped("parked", 0)


def test_an_unreachable_redis_requeues_the_task_instead_of_running_or_dropping_it() -> None:
    from celery.exceptions import Reject

    from kbridge.testing.services import free_port

    celery_app = Celery("down", broker=f"redis://127.0.0.1:{free_port()}/0")
    app = KBridge(client_id="down", kafka={"bootstrap_servers": "x:1"}, celery=celery_app)
    route = app.topic("accounts", consumer=Noop, ordering="key")
    message = msg(1)
    job = Job(route, ParamsBatch([message]), delivery=Request("a", [route.route_id, [to_wire(message)]], "q"))
    with pytest.raises(Reject) as info:
        OrderingStage(celery_app).before(job)
    assert info.value.requeue is True
