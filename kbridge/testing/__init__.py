"""Helpers for testing kbridge apps: an in-memory TestClient, and real services for integration tests.

TestClient, Result and DeadLetter are imported on first use, so loading the pytest plugin
(which imports this package) stays cheap for projects that never use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import DeadLetter, Result, TestClient

__all__ = ["DeadLetter", "Result", "TestClient"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
