"""Names and addresses shared by the bench process and its listener/worker subprocesses.

Everything is derived from one run id, so topics, consumer groups, Celery queues and
Redis keys of one run never collide with another run (or with the test suite's).
The subprocesses receive the same values through BENCH_* environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV_RUN = "BENCH_RUN"
ENV_KAFKA = "BENCH_KAFKA"
ENV_REDIS = "BENCH_REDIS"
ENV_MAX_POLL_RECORDS = "BENCH_MAX_POLL_RECORDS"
ENV_FETCH_MAX_WAIT_MS = "BENCH_FETCH_MAX_WAIT_MS"

# The raw baseline polls 2000 records at a time; kbridge gets the same, so the
# comparison is about kbridge's per-message work, not about poll sizes.
DEFAULT_MAX_POLL_RECORDS = 2000


@dataclass(frozen=True)
class BenchConfig:
    run: str
    kafka: str
    redis_url: str
    max_poll_records: int = DEFAULT_MAX_POLL_RECORDS
    # None: kafka-python's default (500 ms). Tansu answers a fetch only after about half
    # of it even when data is waiting, which dominates produce -> consume latency.
    fetch_max_wait_ms: int | None = None

    @classmethod
    def from_env(cls) -> BenchConfig:
        """The config a subprocess was started with (harmless defaults when imported elsewhere)."""
        return cls(
            run=os.environ.get(ENV_RUN, "local"),
            kafka=os.environ.get(ENV_KAFKA, "127.0.0.1:9092"),
            redis_url=os.environ.get(ENV_REDIS, "redis://127.0.0.1:6379/0"),
            max_poll_records=int(os.environ.get(ENV_MAX_POLL_RECORDS, DEFAULT_MAX_POLL_RECORDS)),
            fetch_max_wait_ms=int(os.environ[ENV_FETCH_MAX_WAIT_MS]) if os.environ.get(ENV_FETCH_MAX_WAIT_MS) else None,
        )

    def env(self) -> dict[str, str]:
        return {
            ENV_RUN: self.run,
            ENV_KAFKA: self.kafka,
            ENV_REDIS: self.redis_url,
            ENV_MAX_POLL_RECORDS: str(self.max_poll_records),
            ENV_FETCH_MAX_WAIT_MS: "" if self.fetch_max_wait_ms is None else str(self.fetch_max_wait_ms),
        }

    def kafka_tuning(self) -> dict[str, int]:
        """Consumer settings applied alike to kbridge's listener and to the raw baselines."""
        return {} if self.fetch_max_wait_ms is None else {"fetch_max_wait_ms": self.fetch_max_wait_ms}

    @property
    def client_id(self) -> str:
        return f"bench-{self.run}"

    def topic(self, bench: str) -> str:
        return f"bench-{self.run}.{bench}"

    def queue(self, bench: str) -> str:
        return f"bench-{self.run}.{bench}"

    def group_id(self, bench: str) -> str:
        """kbridge names a group's Kafka group id '<client_id>_<group name>'; the bench names groups by benchmark."""
        return f"{self.client_id}_{bench}"


def done_key(queue_or_topic: str) -> str:
    """Redis key prefix where performs of one benchmark record what they did."""
    return f"{queue_or_topic}:done"
