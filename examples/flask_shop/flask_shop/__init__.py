"""A Flask shop whose Kafka consumers write to SQLite through the app context.

    flask --app flask_shop init-db
    flask --app flask_shop kbridge listen                  # Kafka -> filters -> Celery
    celery -A flask_shop.celery_app worker                 # runs the orders consumer
    flask --app flask_shop run                             # GET /orders, GET /stock

Configuration is Flask config, overridable from the environment with Flask's FLASK_
prefix (values are parsed as JSON), e.g.
FLASK_KBRIDGE_KAFKA='{"bootstrap_servers": "kafka:9092"}' or FLASK_CELERY__broker_url=redis://redis:6379/0.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

# Not `from .extensions import celery_app`: that name would shadow the flask_shop.celery_app
# module, which `celery -A flask_shop.celery_app` must import to build the Flask app.
from . import consumers, db, extensions, views

__all__ = ["consumers", "create_app"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        DATABASE=os.path.join(app.instance_path, "flask_shop.sqlite3"),
        KBRIDGE_KAFKA={"bootstrap_servers": "127.0.0.1:9092"},
        KBRIDGE_SHUTDOWN_TIMEOUT=20,
        CELERY={
            "broker_url": "redis://127.0.0.1:6379/0",
            "broker_connection_retry_on_startup": True,
            "task_default_queue": "flask_shop",
            "worker_hijack_root_logger": False,
        },
    )
    app.config.from_prefixed_env()
    app.config.update(config or {})

    extensions.celery_app.conf.update(app.config["CELERY"])  # the Celery app is configured from the Flask app
    extensions.kbridge.init_app(app)  # KBRIDGE_* config; perform() now runs inside this app's context
    db.init_app(app)
    app.register_blueprint(views.bp)
    return app
