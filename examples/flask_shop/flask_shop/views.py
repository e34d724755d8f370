"""Read-only JSON views over what the consumers wrote."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .db import get_db

bp = Blueprint("shop", __name__)


@bp.get("/orders")
def orders() -> list[dict[str, Any]]:
    rows = get_db().execute("SELECT id, customer, total_cents FROM orders ORDER BY id").fetchall()
    return [dict(r) for r in rows]


@bp.get("/stock")
def stock() -> dict[str, int]:
    rows = get_db().execute("SELECT sku, SUM(delta) AS level FROM stock_moves GROUP BY sku ORDER BY sku")
    return {r["sku"]: r["level"] for r in rows}
