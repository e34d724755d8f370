"""The shop's Celery and KBridge objects, created at import time and configured by create_app().

Import-time objects let consumers.py declare routes at import time, and let
`celery -A flask_shop.celery_app worker` find the Celery app.

client_id and celery are given here, not in the Flask config, because routes are declared
before create_app() runs: the client_id names the Kafka consumer groups
("flask_shop_orders"), and the Celery app makes "celery" the routes' default backend.
"""

from __future__ import annotations

from celery import Celery

from kbridge import KBridge

celery_app = Celery("flask_shop")
kbridge = KBridge(client_id="flask_shop", celery=celery_app)
