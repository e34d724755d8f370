"""The Django project's KBridge app as a module attribute, for tools that take MODULE:ATTR.

    DJANGO_SETTINGS_MODULE=shop.settings kbridge listen --app kbridge.contrib.django.app:app
    DJANGO_SETTINGS_MODULE=shop.settings celery -A kbridge.contrib.django.app:celery_app worker

Importing this module sets Django up (django.setup()) if it is not set up yet.
`celery_app` is the app from KBRIDGE["celery"] or KBRIDGE["broker"], or None.
"""

from __future__ import annotations

import os

import django
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured

from .registry import get_app

if not apps.ready:
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise ImproperlyConfigured(
            "kbridge.contrib.django.app needs DJANGO_SETTINGS_MODULE, e.g. "
            "DJANGO_SETTINGS_MODULE=shop.settings kbridge listen --app kbridge.contrib.django.app:app "
            "(or run: python manage.py kbridge listen)"
        )
    django.setup()

app = get_app()
celery_app = app.celery
