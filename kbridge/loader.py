"""Finds the KBridge app named by --app or KBRIDGE_APP, with errors that say how to fix the name."""

from __future__ import annotations

import importlib
import os
import sys

from .app import KBridge
from .errors import KBridgeError

HINT = "pass --app module:attribute (or set KBRIDGE_APP), e.g. --app shop.kafka:app"


def load_app(spec: str | None) -> KBridge:
    if not spec:
        raise KBridgeError(f"no app given: {HINT}")
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `celery -A`, find modules of the project being run
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or (exc.name and module_name.startswith(exc.name + ".")):
            raise KBridgeError(f"cannot import module {module_name!r} from app {spec!r}: {exc}; {HINT}") from exc
        raise
    if attr:
        if not hasattr(module, attr):
            raise KBridgeError(f"module {module_name!r} has no attribute {attr!r}; {HINT}")
        found = getattr(module, attr)
        if not isinstance(found, KBridge):
            raise KBridgeError(f"{spec!r} is a {type(found).__name__}, not a KBridge app; {HINT}")
        return found
    apps = [v for v in vars(module).values() if isinstance(v, KBridge)]
    if len(apps) != 1:
        raise KBridgeError(f"module {module_name!r} defines {len(apps)} KBridge apps; name one: {HINT}")
    return apps[0]
