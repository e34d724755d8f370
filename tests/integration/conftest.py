"""One test app run per module: a unique run id (topic, group and queue names) and one celery worker."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from kbridge.testing import processes
from kbridge.testing.kafka import committed_offsets, create_topics, end_offsets, produce, read_topic, wait_until
from kbridge.testing.services import KafkaService, RedisService

APP = "tests.apps.pipeline:app"
CELERY_APP = "tests.apps.pipeline:celery_app"


@dataclass
class PipelineRun:
    """Names and probes for one module's run of tests/apps/pipeline.py."""

    run: str
    kafka: KafkaService
    redis_url: str
    broker_url: str = ""  # the Celery broker, when it is not the recording Redis

    @property
    def env(self) -> dict[str, str]:
        return {
            "PIPELINE_RUN": self.run, "PIPELINE_KAFKA": self.kafka.bootstrap, "PIPELINE_REDIS": self.redis_url,
            "PIPELINE_BROKER": self.broker_url,
        }

    @property
    def queue(self) -> str:
        return f"kbridge-{self.run}"

    def topic(self, suffix: str) -> str:
        return f"{self.run}.{suffix}"

    def group_id(self, topic: str) -> str:
        return f"pipe-{self.run}_{topic}"  # app.topic() names the group after the topic

    def seen(self, topic: str) -> dict[tuple[int, int], int]:
        """(partition, offset) -> how many times perform() ran for it."""
        raw = redis.Redis.from_url(self.redis_url).hgetall(f"{self.run}:seen:{topic}")
        return {tuple(map(int, k.decode().split(":"))): int(v) for k, v in raw.items()}  # type: ignore[misc]

    def extra(self, topic: str) -> dict[tuple[int, int], str]:
        raw = redis.Redis.from_url(self.redis_url).hgetall(f"{self.run}:extra:{topic}")
        return {tuple(map(int, k.decode().split(":"))): v.decode() for k, v in raw.items()}  # type: ignore[misc]

    def create(self, topic: str, partitions: int = 3) -> None:
        create_topics(self.kafka.bootstrap, [topic], partitions)

    def produce(self, topic: str, values: list[bytes]) -> dict[int, list[int]]:
        return produce(self.kafka.bootstrap, topic, values)

    def committed(self, topic: str) -> dict:  # type: ignore[type-arg]
        return committed_offsets(self.kafka.bootstrap, self.group_id(topic))

    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def filter_calls(self, topic: str) -> int:
        """How many times tests/apps/pipeline.py's CountingFilterConsumer filter ran, over every message."""
        return sum(int(v) for v in self.store().hvals(f"{self.run}:filter-calls:{topic}"))

    def dead_letters(self, topic: str, count: int, timeout: float = 30) -> list:  # type: ignore[type-arg]
        return read_topic(self.kafka.bootstrap, f"{topic}.dlq", count, timeout)

    def listener(self, topic: str, name: str = "listener") -> processes.Process:
        proc = processes.listener(APP, self.env, groups=[topic], name=name).start()
        return proc

    def wait_all_committed(self, topic: str, written: dict[int, list[int]], timeout: float = 120) -> None:
        want = end_offsets(written, topic)
        wait_until(lambda: self.committed(topic) == want, timeout, what=f"committed offsets {want}")


SCENARIO_LINES: list[str] = []


@pytest.fixture(autouse=True)
def _collect_scenario_counts(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Keep each scenario's counts line for the run's closing summary (tests/conftest.py)."""
    yield
    out = capsys.readouterr().out
    sys.stdout.write(out)  # still part of the test's own captured output
    SCENARIO_LINES.extend(line for line in out.splitlines() if " produced=" in line or line.startswith("["))


@pytest.fixture(scope="module")
def pipeline(kbridge_kafka: KafkaService, kbridge_redis: RedisService) -> Iterator[PipelineRun]:
    yield PipelineRun(uuid.uuid4().hex[:8], kbridge_kafka, kbridge_redis.url)


@pytest.fixture(scope="module")
def celery_worker(pipeline: PipelineRun) -> Iterator[processes.Process]:
    worker = processes.celery_worker(CELERY_APP, pipeline.env, [pipeline.queue]).start()
    try:
        worker.wait_for_log("ready.", timeout=60)
        yield worker
    finally:
        worker.stop()
