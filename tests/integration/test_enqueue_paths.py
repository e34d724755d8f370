"""Both enqueue paths reach an unmodified celery worker: the Redis pipeline, and RabbitMQ with confirms."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from kbridge.backends.celery import ledger, redis_pipeline
from kbridge.interchange import to_wire
from kbridge.params import Params
from kbridge.testing import processes

from .conftest import CELERY_APP, PipelineRun
from .test_pipeline import check_round

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("KBRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def test_pipeline_messages_match_what_apply_async_writes(pipeline: PipelineRun) -> None:
    """Same envelope keys, header names and property names as Celery's own publish."""
    queue = f"shape-{uuid.uuid4().hex[:6]}"
    app = Celery("shape", broker=pipeline.redis_url)

    @app.task(name="kbridge.perform", shared=False)
    def perform(route_id: str, messages: list) -> None:  # type: ignore[type-arg]
        pass

    wire = to_wire(Params(topic="t", partition=0, offset=3, raw_payload=b"{}"))
    perform.apply_async(args=["g/t", [wire]], queue=queue, shadow="g/t", serializer="json",
                        soft_time_limit=5, time_limit=15)
    assert redis_pipeline.supports(app, queue)
    redis_pipeline.RedisPipelinePublisher(app, 60).publish("kbridge.perform", queue, "g/t", [["g/t", [wire]]], 15, 5)

    theirs, ours = (json.loads(m) for m in redis.Redis.from_url(pipeline.redis_url).lrange(queue, 0, -1)[::-1])
    assert ours.keys() == theirs.keys()
    assert ours["headers"].keys() - theirs["headers"].keys() == {ledger.HEADER}  # ours adds only the ledger's
    assert theirs["headers"].keys() <= ours["headers"].keys()
    assert ours["properties"].keys() == theirs["properties"].keys()
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]
    for key in ("task", "shadow", "retries", "timelimit", "lang"):
        assert ours["headers"][key] == theirs["headers"][key], key
    assert json.loads(base64.b64decode(ours["body"]))[0] == ["g/t", [wire]]


def test_worker_runs_pipeline_enqueued_tasks_with_route_shadow(pipeline: PipelineRun, celery_worker) -> None:  # type: ignore[no-untyped-def]
    topic = pipeline.topic("events")
    check_round(pipeline, topic, 600)
    log = celery_worker.log()
    assert f"Task {topic}/{topic}[" in log, "the worker should log the route's shadow name"


def _amqp_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return "KBRIDGE_TEST_AMQP_URL" in os.environ


@pytest.fixture(scope="module")
def amqp_run(pipeline: PipelineRun) -> Iterator[PipelineRun]:
    if not _amqp_reachable():
        pytest.skip("RabbitMQ is not reachable on 127.0.0.1:5672; set KBRIDGE_TEST_AMQP_URL")
    run = dataclasses.replace(pipeline, run=f"{pipeline.run}amqp", broker_url=AMQP_URL)
    worker = processes.celery_worker(CELERY_APP, run.env, [run.queue], name="amqp-worker").start()
    try:
        worker.wait_for_log("ready.", timeout=60)
        yield run
    finally:
        worker.stop()
        with Celery("cleanup", broker=AMQP_URL).connection_for_write() as conn:
            conn.default_channel.queue_delete(run.queue)


def test_rabbitmq_broker_end_to_end(amqp_run: PipelineRun) -> None:
    """No pipeline here: apply_async with publisher confirms, same delivery guarantees."""
    assert not redis_pipeline.supports(Celery("x", broker=AMQP_URL), "q")
    check_round(amqp_run, amqp_run.topic("events"), 1000)
