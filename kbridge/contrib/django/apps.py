"""INSTALLED_APPS entry: builds the KBridge app when Django starts.

Building it in ready() is what makes a plain `celery -A proj worker` run kbridge
tasks: celery's Django support calls django.setup() before the worker consumes,
which builds the app and registers kbridge.perform on the project's Celery app.
"""

from __future__ import annotations

from django.apps import AppConfig


class KBridgeConfig(AppConfig):
    name = "kbridge.contrib.django"
    label = "kbridge"
    verbose_name = "kbridge"

    def ready(self) -> None:
        from .registry import get_app

        get_app()
