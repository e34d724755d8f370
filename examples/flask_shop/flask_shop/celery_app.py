"""The worker's entry point: `celery -A flask_shop.celery_app worker`.

Importing it builds the Flask app, so the Celery app is configured from the Flask config
and kbridge's task runs each perform() inside that app's context.
"""

from __future__ import annotations

from . import create_app
from .extensions import celery_app

flask_app = create_app()

__all__ = ["celery_app", "flask_app"]
