"""The perform hook that runs perform() and after_failure() inside the Flask app context."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from ...consumer import BaseConsumer


class AppContextHook:
    """A fresh app context per run, in the celery worker and inline in the listener.

    Fresh, like one request: `g` starts empty and teardown_appcontext functions (closing a
    database connection, removing a scoped session) run after every perform, failed or not.
    """

    def __init__(self, flask_app: Flask) -> None:
        self.flask_app = flask_app

    def __call__(self, consumer: BaseConsumer) -> AbstractContextManager[object]:
        return self.flask_app.app_context()

    def __repr__(self) -> str:
        return f"<AppContextHook {self.flask_app.name}>"
