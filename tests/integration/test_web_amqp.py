"""kbridge web's flows over a RabbitMQ Celery broker, through the JSON API: the same reports and commands,
since they travel over Kafka whatever carries the tasks."""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from kbridge.testing import processes
from kbridge.testing.kafka import create_topics, produce, wait_until
from kbridge.testing.services import KafkaService, RedisService, free_port, wait_for_port

from .test_enqueue_paths import AMQP_URL, _amqp_reachable

pytestmark = pytest.mark.integration
pytest.importorskip("starlette", reason="the web extra is not installed")


class Api:
    def __init__(self, url: str) -> None:
        self.url = url
        self.csrf = self.get("/api/csrf")["csrf"]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "X-CSRF-Token": self.csrf})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)


@pytest.fixture(scope="module")
def amqp_web(kbridge_kafka: KafkaService, kbridge_redis: RedisService) -> Iterator[tuple[str, Api, str]]:
    if not _amqp_reachable():
        pytest.skip("RabbitMQ is not reachable on 127.0.0.1:5672; set KBRIDGE_TEST_AMQP_URL")
    run = uuid.uuid4().hex[:8]
    env = {"WEB_RUN": run, "WEB_KAFKA": kbridge_kafka.bootstrap, "WEB_REDIS": kbridge_redis.url,
           "WEB_BROKER": AMQP_URL}
    create_topics(kbridge_kafka.bootstrap, [f"{run}.orders", f"{run}.orders.dlq"], partitions=2)
    started: list[processes.Process] = []
    try:
        started.append(processes.celery_worker("tests.apps.web_app:celery_app", env, [f"kbridge-web-{run}"],
                                               name="amqp-web-worker").start())
        started.append(processes.listener("tests.apps.web_app:app", env, name="amqp-web-listener").start())
        port = free_port()
        server = processes.Process("amqp-web", [sys.executable, "-m", "kbridge", "web", "--app",
                                                "tests.apps.web_app:app", "--port", str(port)],
                                   processes.child_env(env)).start()
        started.append(server)
        wait_for_port(port, 30, server.proc, "kbridge web")
        yield run, Api(f"http://127.0.0.1:{port}"), kbridge_redis.url
    finally:
        for proc in started:
            proc.stop(15)
        with Celery("cleanup", broker=AMQP_URL).connection_for_write() as conn:
            conn.default_channel.queue_delete(f"kbridge-web-{run}")


def test_rabbitmq_broker_listener_pause_resume_and_replay_through_the_api(
    amqp_web: tuple[str, Api, str], kbridge_kafka: KafkaService,
) -> None:
    run, api, redis_url = amqp_web
    topic, group_id = f"{run}.orders", f"web-{run}_{run}.orders"
    store = redis.Redis.from_url(redis_url)

    def partitions() -> dict[int, dict[str, Any]]:
        groups = {g["group_id"]: g["partitions"] for g in api.get("/api/groups")}
        return {p["partition"]: p for p in groups.get(group_id, [])}

    wait_until(lambda: api.get("/api/overview")["listeners_alive"] == 1 and len(partitions()) == 2, 60,
               what="one listener owning 2 partitions")
    command = api.post("/api/pause", {"group_id": group_id, "topic": topic, "partition": 0})
    wait_until(lambda: api.get(f"/api/commands/{command['id']}")["acked_by"], 30, what="the pause acknowledged")
    produce(kbridge_kafka.bootstrap, topic, [b"{}"] * 100, keys=[str(i).encode() for i in range(100)])
    wait_until(lambda: (partitions()[0]["lag"] or 0) > 0 and partitions()[1]["lag"] == 0, 60,
               what="partition 1 drained while paused partition 0 lags")
    api.post("/api/resume", {"group_id": group_id, "topic": topic, "partition": 0})
    wait_until(lambda: partitions()[0]["lag"] == 0, 60, what="partition 0 drained after resume")
    wait_until(lambda: int(store.get(f"{run}:performed") or 0) >= 100, 60, what="100 performs over RabbitMQ")

    produce(kbridge_kafka.bootstrap, topic, [b"poison"])
    dlq = f"{topic}.dlq"
    wait_until(lambda: api.get(f"/api/dead-letters/{dlq}"), 60, interval=1.0, what="the poison letter")
    wait_until(lambda: api.get(f"/api/errors?route={group_id}/{topic}"), 30, what="the worker's failure report")
    failure = api.get(f"/api/errors?route={group_id}/{topic}")[0]
    assert failure["error_class"] == "ValueError" and "poison" in failure["traceback"]
    result = api.post(f"/api/dead-letters/{dlq}/replay", {"limit": None})
    assert result["replayed"] == 1, result
    wait_until(lambda: int(store.get(f"{run}:performed-poison") or 0) == 1, 60, what="the replayed letter performed")
    print(f"[web-amqp] {result['summary']}")

    # a second poison letter, skipped: replay then has nothing to send, and it is never performed
    produce(kbridge_kafka.bootstrap, topic, [b"poison again"])
    fresh = wait_until(lambda: [x for x in api.get(f"/api/dead-letters/{dlq}") if x["payload"] == "poison again"],
                       60, interval=1.0, what="the second poison letter")[0]
    skipped = api.post(f"/api/dead-letters/{dlq}/skip", {"partition": fresh["partition"], "until": fresh["offset"]})
    assert skipped["next"] == fresh["offset"] + 1
    again = api.post(f"/api/dead-letters/{dlq}/replay", {"limit": None})
    assert again["replayed"] == 0, again
    assert int(store.get(f"{run}:performed-poison") or 0) == 1
