"""Flask integration: `KBridge(app=flask_app)` or `kbridge.init_app(flask_app)`.

- Settings come from flask_app.config: KBRIDGE_CLIENT_ID, KBRIDGE_KAFKA, KBRIDGE_CELERY
  (a Celery app or a broker URL) and KBRIDGE_<SETTING> for the other KBridge settings.
  Keyword arguments given to KBridge(...) win over config. Every problem is reported in
  one ConfigError.
- perform() and after_failure() run inside flask_app.app_context(), in the celery worker
  and inline in the listener.
- `flask kbridge listen|info|flow|worker|...` runs kbridge's CLI for this app.

One KBridge is bound to one Flask app at a time. Calling init_app again (an app factory
called once per test) rebinds it to the newer app and rereads the config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import ConfigError
from . import config
from .cli import kbridge_command
from .context import AppContextHook

if TYPE_CHECKING:
    from flask import Flask

    from ...app import KBridge

EXTENSION_NAME = "kbridge"

__all__ = ["AppContextHook", "init_app", "kbridge_command"]


def init_app(kbridge_app: KBridge, flask_app: Flask) -> None:
    found = config.read(kbridge_app, flask_app)
    try:
        kbridge_app.configure(found.values, found.celery, found.problems)
    except ConfigError as exc:
        raise ConfigError([found.explain(p) for p in exc.problems]) from None
    # Outermost, so the user's own hooks (a DB session, say) already see current_app.
    # Slice assignment: backends built earlier hold this very list.
    kbridge_app.perform_hooks[:] = [
        AppContextHook(flask_app), *(h for h in kbridge_app.perform_hooks if not isinstance(h, AppContextHook))
    ]
    flask_app.extensions[EXTENSION_NAME] = kbridge_app
    flask_app.cli.add_command(kbridge_command(kbridge_app))
