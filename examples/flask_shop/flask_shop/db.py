"""SQLite access the Flask way: one connection per app context, in `g`, closed at teardown.

get_db() works only inside an app context (it reads current_app.config["DATABASE"]), which
is why the consumers can call it: kbridge runs every perform() inside one.
"""

from __future__ import annotations

import os
import sqlite3

import click
from flask import Flask, current_app, g

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1  -- > 1 when at-least-once delivery repeated a message
);
CREATE TABLE IF NOT EXISTS stock_moves (
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    sku TEXT NOT NULL,
    delta INTEGER NOT NULL,
    PRIMARY KEY (kafka_partition, kafka_offset)  -- a redelivered move is recorded once
);
"""


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        # Celery worker processes and the listener write concurrently: wait for the lock, don't fail.
        g.db = sqlite3.connect(current_app.config["DATABASE"], timeout=30)
        g.db.row_factory = sqlite3.Row
    db: sqlite3.Connection = g.db
    return db


def close_db(exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def init_db() -> None:
    os.makedirs(os.path.dirname(os.path.abspath(current_app.config["DATABASE"])), exist_ok=True)
    db = get_db()
    db.execute("PRAGMA journal_mode=WAL")  # readers (the web views) never block the consumers' writes
    db.executescript(SCHEMA)


@click.command("init-db")
def init_db_command() -> None:
    """Create the tables (idempotent)."""
    init_db()
    click.echo(f"initialized {current_app.config['DATABASE']}")


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)
    app.cli.add_command(init_db_command)
