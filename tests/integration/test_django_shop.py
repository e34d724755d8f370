"""The Django example (examples/django_shop) end to end, on the real broker, Redis and celery worker.

`celery -A shop worker` and `python manage.py kbridge listen` run as subprocesses
of the example project, configured by SHOP_* environment variables: private
topics, consumer group, Celery queue and SQLite file for this run. The consumers
write ORM rows; the test reads the SQLite file and the group's committed offsets.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kbridge.testing import processes
from kbridge.testing.kafka import committed_offsets, create_topics, end_offsets, produce, wait_until
from kbridge.testing.services import KafkaService, RedisService

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_shop"
ORDERS = 300
PAYMENTS = 60


@dataclass
class Shop:
    """One run of the example project: its environment, names and probes."""

    run: str
    kafka: KafkaService
    redis_url: str
    db_path: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "shop.settings",
            "SHOP_DB_PATH": str(self.db_path),
            "SHOP_KAFKA": self.kafka.bootstrap,
            "SHOP_BROKER_URL": self.redis_url,
            "SHOP_CELERY_QUEUE": self.queue,
            "SHOP_KBRIDGE_CLIENT_ID": f"shop-{self.run}",
            "SHOP_TOPIC_PREFIX": f"{self.run}.",
        }

    @property
    def queue(self) -> str:
        return f"shop-{self.run}"

    @property
    def group_id(self) -> str:
        return f"shop-{self.run}_shop"  # <client_id>_<consumer group name>

    def topic(self, name: str) -> str:
        return f"{self.run}.{name}"

    def manage(self, *args: str, name: str = "manage") -> processes.Process:
        return processes.Process(name, [sys.executable, "manage.py", *args], processes.child_env(self.env))

    def rows(self, sql: str) -> set[tuple[object, ...]]:
        with sqlite3.connect(self.db_path, timeout=30) as db:
            return set(db.execute(sql).fetchall())


@pytest.fixture(scope="module")
def shop(kbridge_kafka: KafkaService, kbridge_redis: RedisService, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    run = uuid.uuid4().hex[:8]
    shop = Shop(run, kbridge_kafka, kbridge_redis.url, tmp_path_factory.mktemp(f"django-shop-{run}") / "shop.sqlite3")
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=EXAMPLE, env=processes.child_env(shop.env), capture_output=True, text=True, timeout=120,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    return shop


@pytest.fixture(scope="module")
def shop_worker(shop: Shop) -> Iterator[processes.Process]:
    """A plain `celery -A shop worker`: nothing kbridge-specific on its command line."""
    worker = in_project(processes.celery_worker("shop", shop.env, [shop.queue], name="shop-worker"))
    try:
        worker.wait_for_log("ready.", timeout=90)
        yield worker
    finally:
        worker.stop()


def in_project(process: processes.Process) -> processes.Process:
    """Start it from the project directory, as a user runs `celery -A shop worker` and `manage.py`."""
    here = os.getcwd()
    os.chdir(EXAMPLE)
    try:
        return process.start()
    finally:
        os.chdir(here)


def order(number: int) -> dict[str, object]:
    return {"number": number, "customer": f"customer-{number % 17}", "total_cents": 100 + number,
            "test": number % 6 == 0}


def payment(number: int) -> dict[str, object]:
    return {"reference": f"pay-{number}", "order_number": number, "amount_cents": 100 + number}


def test_orders_via_celery_and_payments_inline_become_rows_exactly_once(
    shop: Shop, shop_worker: processes.Process
) -> None:
    orders_topic, payments_topic = shop.topic("orders"), shop.topic("payments")
    create_topics(shop.kafka.bootstrap, [orders_topic], 3)
    create_topics(shop.kafka.bootstrap, [payments_topic], 2)
    orders = [order(n) for n in range(1, ORDERS + 1)]
    payments = [payment(n) for n in range(1, PAYMENTS + 1)]
    written = {
        orders_topic: produce(shop.kafka.bootstrap, orders_topic, [json.dumps(o).encode() for o in orders]),
        payments_topic: produce(shop.kafka.bootstrap, payments_topic, [json.dumps(p).encode() for p in payments]),
    }
    want_orders = {(o["number"], o["customer"], o["total_cents"]) for o in orders if not o["test"]}
    want_payments = {(p["reference"], p["order_number"], p["amount_cents"]) for p in payments}
    want_offsets = {**end_offsets(written[orders_topic], orders_topic),
                    **end_offsets(written[payments_topic], payments_topic)}

    listener = in_project(shop.manage("kbridge", "listen", name="shop-listener"))
    started = time.monotonic()
    try:
        wait_until(
            lambda: committed_offsets(shop.kafka.bootstrap, shop.group_id) == want_offsets
            and len(shop.rows("SELECT number FROM orders_order")) == len(want_orders)
            and len(shop.rows("SELECT reference FROM orders_payment")) == len(want_payments),
            120, interval=0.5, what=f"{len(want_orders)} orders, {len(want_payments)} payments and all committed",
            alive=[listener, shop_worker],
        )
        elapsed = time.monotonic() - started
    finally:
        rc = listener.stop()

    got_orders = shop.rows("SELECT number, customer, total_cents FROM orders_order")
    got_payments = shop.rows("SELECT reference, order_number, amount_cents FROM orders_payment")
    print(f"\ndjango shop: produced {ORDERS} orders ({len(want_orders)} accepted) and {PAYMENTS} payments; "
          f"rows {len(got_orders)} + {len(got_payments)} and all offsets committed in {elapsed:.1f}s")
    assert got_orders == want_orders
    assert got_payments == want_payments
    assert committed_offsets(shop.kafka.bootstrap, shop.group_id) == want_offsets
    assert rc == 0, listener.log()[-3000:]
    # Orders ran in the celery worker (under the route's shadow name); payments inline, in the listener.
    worker_log = shop_worker.log()
    assert f"shop/{orders_topic}" in worker_log and f"shop/{payments_topic}" not in worker_log


def test_manage_py_kbridge_info_shows_the_autodiscovered_routes(shop: Shop) -> None:
    info = in_project(shop.manage("kbridge", "info", name="shop-info"))
    assert info.wait(60) == 0, info.log()
    lines = info.log().splitlines()
    for topic, consumer, backend in [("orders", "OrderConsumer", "celery"), ("payments", "PaymentConsumer", "inline")]:
        line = next((ln for ln in lines if shop.topic(topic) in ln and consumer in ln), "")
        assert shop.group_id in line and f"orders.consumers.{consumer}" in line and backend in line, info.log()
