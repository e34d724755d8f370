"""Example kbridge worker pool: Kafka topic "events" -> EventsConsumer on Celery workers.

Importing the package loads the Celery app *and* the routes, so a plain
`celery -A workers worker` has the `kbridge.perform` task and knows every route,
and `kbridge listen --app workers:kbridge_app` finds the app. `python -m workers.demo`
runs the whole pipeline on embedded services.
"""

from .celery import app as celery_app
from .routes import kbridge_app

__all__ = ["celery_app", "kbridge_app"]
