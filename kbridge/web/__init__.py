"""kbridge web: a dashboard of listeners, lag, errors and dead letters (the `web` extra)."""

from __future__ import annotations

from .server import create_app, serve

__all__ = ["create_app", "serve"]
