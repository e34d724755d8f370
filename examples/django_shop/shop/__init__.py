"""The shop project. Importing it loads the Celery app, so `celery -A shop worker` finds it."""

from .celery import app as celery_app

__all__ = ["celery_app"]
