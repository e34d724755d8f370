"""The one KBridge app of a Django project: built from settings.KBRIDGE, routed by `consumers` modules.

Built once per process, under a lock. The app is published *before* the
`consumers` modules of installed apps are imported, so those modules can declare
their routes on it with `from kbridge.contrib.django import kbridge_app` (the
pattern of django.contrib.admin's `admin.site`).
"""

from __future__ import annotations

import threading

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

from kbridge.app import KBridge

from .conf import SETTING, build_app
from .hooks import close_old_connections_hook

APP_NAME = "kbridge.contrib.django"
ROUTES_MODULE = "consumers"

_lock = threading.RLock()
_app: KBridge | None = None
_failed: BaseException | None = None


def get_app() -> KBridge:
    """The project's KBridge app, with every installed app's `consumers` module imported (its routes declared)."""
    global _app, _failed
    with _lock:  # reentrant: a consumers module being autodiscovered asks for the app it is routing
        if _failed is not None:
            raise ImproperlyConfigured(
                f"building the KBridge app failed earlier in this process ({type(_failed).__name__}: {_failed}); "
                "fix that error and restart the process"
            ) from _failed
        if _app is None:
            _check_django()
            app = build_app(getattr(settings, SETTING, None))
            app.perform_hooks.append(close_old_connections_hook)
            _app = app
            try:
                autodiscover_modules(ROUTES_MODULE)
            except BaseException as exc:
                # A half-routed app must never be listened to or run tasks, and it cannot simply be
                # built again: its task is already registered on the Celery app, and the consumers
                # modules that did import would not be imported (and route) a second time.
                _app, _failed = None, exc
                raise
        return _app


def _check_django() -> None:
    if not apps.apps_ready:
        raise ImproperlyConfigured(
            "kbridge.contrib.django needs a set-up Django project: set DJANGO_SETTINGS_MODULE and call "
            "django.setup() first (manage.py and celery's Django support do this for you)"
        )
    if not apps.is_installed(APP_NAME):
        raise ImproperlyConfigured(
            f"add {APP_NAME!r} to INSTALLED_APPS, so that celery workers build the KBridge app "
            "and register the kbridge.perform task when Django starts"
        )
