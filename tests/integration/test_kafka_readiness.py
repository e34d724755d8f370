"""A running listener that loses Kafka says so: one log line each way, and /ready answers 503 meanwhile."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from kbridge.testing import processes
from kbridge.testing.kafka import wait_until
from kbridge.testing.services import KAFKA_ENV, KafkaService, RedisService, free_port, kafka_service

from .conftest import APP, PipelineRun

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(os.environ.get(KAFKA_ENV)), reason="stops the broker; needs the embedded one")]


@pytest.fixture(scope="module")
def pipeline(kbridge_redis: RedisService) -> Iterator[PipelineRun]:
    kafka = kafka_service()
    try:
        yield PipelineRun(uuid.uuid4().hex[:8], kafka, kbridge_redis.url)
    finally:
        kafka.stop()


def ready(port: int) -> tuple[int, dict]:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except urllib.error.URLError:
        return 0, {}  # not serving yet


def test_ready_turns_503_while_kafka_is_gone_and_the_listener_logs_both_changes(pipeline: PipelineRun) -> None:
    topic = pipeline.topic("events")
    pipeline.create(topic, 1)
    port = free_port()
    listener = processes.Process(
        "listener", [*processes.listener(APP, pipeline.env, groups=[topic]).argv, "--health-port", str(port)],
        processes.child_env(pipeline.env),
    ).start()
    kafka = pipeline.kafka
    assert isinstance(kafka, KafkaService)
    try:
        wait_until(lambda: ready(port)[0] == 200, 60, what="the listener to be ready", alive=[listener])
        kafka.stop()
        wait_until(lambda: ready(port)[0] == 503, 60, what="/ready to turn 503", alive=[listener])
        status, body = ready(port)
        print(f"\n[kafka-lost] /ready {status} {body}")
        assert body.get("kafka_lost"), body
        listener.wait_for_log("lost Kafka", timeout=10)
        kafka.start()
        listener.wait_for_log("reaches Kafka again", timeout=60)
    finally:
        if not kafka.running:
            kafka.start()
        code = listener.stop()
    log = listener.log()
    assert log.count("lost Kafka") == 1 and log.count("reaches Kafka again") == 1, log[-3000:]
    assert code == 0, log[-3000:]
