"""Unit-test isolation.

- kbridge.perform is registered with shared=False; should that regress, Celery's
  process-wide "on app finalize" hooks would leak tasks between tests, so each test
  still gets its own copy of that hook set (test_worker checks the isolation itself).
- Unit tests never talk to Kafka: a dead-letter producer fails at once instead of
  waiting for a broker that is not there.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import _state

import kbridge.dlq


@pytest.fixture(autouse=True)
def _isolated_celery_shared_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_state, "_on_app_finalizers", set(_state._on_app_finalizers))


@pytest.fixture(autouse=True)
def _no_kafka_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**config: Any) -> None:
        raise AssertionError("a unit test tried to create a KafkaProducer; use a fake dead_letters")

    monkeypatch.setattr(kbridge.dlq, "KafkaProducer", refuse, raising=False)
