"""examples/flask_shop end to end: `flask kbridge listen` + `celery -A flask_shop.celery_app worker` on real services.

Both consumers write through get_db(), which only works inside the Flask app context: the
orders consumer in the celery worker, the stock consumer inline in the listener. Rows in
SQLite therefore prove perform() ran inside the app context on both backends.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kbridge.testing import processes
from kbridge.testing.kafka import (
    FAST_GROUP,
    committed_offsets,
    create_topics,
    end_offsets,
    produce,
    wait_until,
)
from kbridge.testing.services import KafkaService, RedisService

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask_shop"
ORDERS = 300
STOCK_MOVES = 200


def order(i: int) -> dict[str, object]:
    """About a third are not paid: the listener filters them out and never enqueues them."""
    status = "cart" if i % 4 == 0 else "cancelled" if i % 9 == 0 else "paid"
    return {"id": f"o-{i:04d}", "customer": f"c-{i % 17}", "total_cents": 100 + i * 7, "status": status}


def stock_move(i: int) -> dict[str, object]:
    return {"sku": f"sku-{i % 5}", "delta": (i % 7) - 2}


@dataclass
class Shop:
    run: str
    kafka: KafkaService
    redis_url: str
    database: str
    procs: list[processes.Process] = field(default_factory=list)

    @property
    def orders_topic(self) -> str:
        return f"{self.run}.orders"

    @property
    def stock_topic(self) -> str:
        return f"{self.run}.stock"

    @property
    def env(self) -> dict[str, str]:
        """The example's own configuration mechanism: Flask's FLASK_-prefixed environment (JSON values)."""
        env = processes.child_env({
            "PYTHONPATH": str(EXAMPLE),
            "FLASK_SHOP_TOPIC_PREFIX": f"{self.run}.",
            "FLASK_DATABASE": self.database,
            "FLASK_KBRIDGE_KAFKA": json.dumps({"bootstrap_servers": self.kafka.bootstrap, **FAST_GROUP}),
            "FLASK_CELERY__broker_url": self.redis_url,
            "FLASK_CELERY__task_default_queue": self.queue,
        })
        env.pop("KBRIDGE_APP", None)  # `flask kbridge` must use the Flask app's KBridge
        return env

    @property
    def queue(self) -> str:
        return f"flask-shop-{self.run}"

    def flask(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "flask", "--app", "flask_shop", *args]

    def committed(self, group_id: str, topic: str) -> dict:  # type: ignore[type-arg]
        return {tp: o for tp, o in committed_offsets(self.kafka.bootstrap, group_id).items() if tp.topic == topic}

    def query(self, sql: str) -> list[tuple]:  # type: ignore[type-arg]
        with sqlite3.connect(self.database, timeout=30) as db:
            return db.execute(sql).fetchall()


@dataclass
class Produced:
    orders: dict[int, list[int]]
    stock: dict[int, list[int]]
    paid: dict[str, tuple[str, int]]  # order id -> (customer, total_cents)
    levels: dict[str, int]


@pytest.fixture(scope="module")
def shop(kbridge_kafka: KafkaService, kbridge_redis: RedisService, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Shop]:
    run = f"fs{uuid.uuid4().hex[:8]}"
    shop = Shop(run, kbridge_kafka, kbridge_redis.url, str(tmp_path_factory.mktemp("flask_shop") / "shop.sqlite3"))
    init = subprocess.run(shop.flask("init-db"), env=shop.env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    create_topics(kbridge_kafka.bootstrap, [shop.orders_topic], 3)
    create_topics(kbridge_kafka.bootstrap, [shop.stock_topic], 2)
    worker = processes.Process(
        "flask-shop-worker",
        [sys.executable, "-m", "celery", "-A", "flask_shop.celery_app", "worker", "-P", "prefork", "-c", "2",
         "-Q", shop.queue, "-n", f"flask-shop-{run}@%h", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-l", "info"],
        shop.env,
    )
    listener = processes.Process("flask-shop-listener", shop.flask("kbridge", "listen"), shop.env)
    shop.procs = [worker.start(), listener.start()]
    try:
        yield shop
        assert listener.stop() == 0, listener.log()[-4000:]
    finally:
        for proc in shop.procs:
            proc.stop()


@pytest.fixture(scope="module")
def produced(shop: Shop) -> Produced:
    orders = [order(i) for i in range(ORDERS)]
    moves = [stock_move(i) for i in range(STOCK_MOVES)]
    levels: dict[str, int] = {}
    for m in moves:
        levels[str(m["sku"])] = levels.get(str(m["sku"]), 0) + int(str(m["delta"]))
    return Produced(
        orders=produce(shop.kafka.bootstrap, shop.orders_topic, [json.dumps(o).encode() for o in orders]),
        stock=produce(shop.kafka.bootstrap, shop.stock_topic, [json.dumps(m).encode() for m in moves]),
        paid={str(o["id"]): (str(o["customer"]), int(str(o["total_cents"]))) for o in orders if o["status"] == "paid"},
        levels=levels,
    )


def test_worker_writes_every_paid_order_in_the_app_context(shop: Shop, produced: Produced) -> None:
    started = time.monotonic()
    wait_until(lambda: shop.query("SELECT COUNT(*) FROM orders")[0][0] >= len(produced.paid), 90,
               what=f"{len(produced.paid)} order rows", alive=shop.procs)
    want = end_offsets(produced.orders, shop.orders_topic)
    wait_until(lambda: shop.committed("flask_shop_orders", shop.orders_topic) == want, 60,
               what=f"committed offsets {want}", alive=shop.procs)
    rows = shop.query("SELECT id, customer, total_cents, kafka_partition, kafka_offset, deliveries FROM orders")
    print(f"\nflask_shop orders: produced={ORDERS} paid={len(produced.paid)} rows={len(rows)} "
          f"duplicates={sum(r[5] - 1 for r in rows)} in {time.monotonic() - started:.1f}s")

    assert {r[0]: (r[1], r[2]) for r in rows} == produced.paid
    assert len(rows) == len(produced.paid)
    placed = {(p, o) for p, offsets in produced.orders.items() for o in offsets}
    assert {(r[3], r[4]) for r in rows} <= placed
    assert shop.committed("flask_shop_orders", shop.orders_topic) == want
    assert "dead-lettered" not in shop.procs[0].log() + shop.procs[1].log()


def test_listener_runs_inline_stock_moves_in_the_app_context(shop: Shop, produced: Produced) -> None:
    wait_until(lambda: shop.query("SELECT COUNT(*) FROM stock_moves")[0][0] >= STOCK_MOVES, 90,
               what=f"{STOCK_MOVES} stock moves", alive=shop.procs)
    want = end_offsets(produced.stock, shop.stock_topic)
    wait_until(lambda: shop.committed("flask_shop_stock", shop.stock_topic) == want, 60,
               what=f"committed offsets {want}", alive=shop.procs)

    moves = shop.query("SELECT kafka_partition, kafka_offset FROM stock_moves")
    assert sorted(moves) == sorted((p, o) for p, offsets in produced.stock.items() for o in offsets)
    levels = dict(shop.query("SELECT sku, SUM(delta) FROM stock_moves GROUP BY sku"))
    assert levels == produced.levels
    assert shop.committed("flask_shop_stock", shop.stock_topic) == want
    assert "dead-lettered" not in shop.procs[1].log()
