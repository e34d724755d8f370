"""Kafka routes of the shop, declared at import time on the not-yet-configured KBridge.

- orders: paid orders become rows, in the celery worker. Other statuses are filtered out
  in the listener and never enqueued (their offsets are still committed).
- stock: stock moves, inline in the listener, so moves are applied in partition order.

Topic names take an optional prefix from FLASK_SHOP_TOPIC_PREFIX, so test runs do not
share topics. Routes exist before any Flask app does, so they cannot read app.config.
"""

from __future__ import annotations

import os

from kbridge import BaseConsumer, before_enqueue

from .db import get_db
from .extensions import kbridge

TOPIC_PREFIX = os.environ.get("FLASK_SHOP_TOPIC_PREFIX", "shop.")
ORDERS_TOPIC = f"{TOPIC_PREFIX}orders"
STOCK_TOPIC = f"{TOPIC_PREFIX}stock"


class OrdersConsumer(BaseConsumer):
    @before_enqueue
    def paid(self) -> bool:
        return bool(self.params.payload.get("status") == "paid")

    def perform(self) -> None:
        """Idempotent: a redelivered order updates its row and counts the delivery."""
        order = self.params.payload
        db = get_db()
        db.execute(
            "INSERT INTO orders (id, customer, total_cents, kafka_partition, kafka_offset) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET deliveries = deliveries + 1",
            (order["id"], order["customer"], order["total_cents"], self.params.partition, self.params.offset),
        )
        db.commit()


class StockConsumer(BaseConsumer):
    def perform(self) -> None:
        move = self.params.payload
        db = get_db()
        db.execute(
            "INSERT OR IGNORE INTO stock_moves (kafka_partition, kafka_offset, sku, delta) VALUES (?, ?, ?, ?)",
            (self.params.partition, self.params.offset, move["sku"], move["delta"]),
        )
        db.commit()


with kbridge.consumer_group("orders") as group:
    group.topic(ORDERS_TOPIC, consumer=OrdersConsumer, max_retries=5)

with kbridge.consumer_group("stock") as group:
    group.topic(STOCK_TOPIC, consumer=StockConsumer, backend="inline")
