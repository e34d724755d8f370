"""Django integration: INSTALLED_APPS += ["kbridge.contrib.django"] and a KBRIDGE settings dict.

- The KBridge app is built from settings.KBRIDGE when Django starts (AppConfig.ready),
  so `python manage.py ...` and `celery -A proj worker` both have it.
- Routes live in a `consumers` module of any installed app, declared on the shared app:

      from kbridge.contrib.django import kbridge_app
      kbridge_app.topic("orders", consumer=OrderConsumer)

- `python manage.py kbridge listen|info|flow|...` runs the kbridge CLI with that app.
- Every perform() runs between two django.db.close_old_connections() calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .conf import KBridgeSettingsError, build_app
from .hooks import close_old_connections_hook
from .registry import get_app

if TYPE_CHECKING:
    from kbridge.app import KBridge

    kbridge_app: KBridge

__all__ = ["KBridgeSettingsError", "build_app", "close_old_connections_hook", "get_app", "kbridge_app"]


def __getattr__(name: str) -> Any:
    """`kbridge_app` is looked up when first imported, i.e. once Django is set up, not at package import."""
    if name == "kbridge_app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
