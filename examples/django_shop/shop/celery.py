"""The project's Celery app, in the usual Django layout: `celery -A shop worker`.

Nothing kbridge-specific is needed here. Celery's Django support calls
django.setup() before the worker consumes; kbridge.contrib.django's AppConfig then
builds the KBridge app from settings.KBRIDGE (which names this app) and registers
the kbridge.perform task on it, with the routes of every `consumers` module.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
