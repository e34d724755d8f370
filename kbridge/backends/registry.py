"""Which backend name means which plugin: the built-ins, what was registered, and installed entry points."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from . import BackendPlugin

ENTRY_POINT_GROUP = "kbridge.backends"
# Built-ins are imported on first use, so declaring an inline-only app never imports Celery's side.
_BUILT_IN = {"inline": "kbridge.backends.inline:PLUGIN", "celery": "kbridge.backends.celery:PLUGIN"}
_plugins: dict[str, BackendPlugin] = {}


def register(plugin: BackendPlugin) -> BackendPlugin:
    _plugins[plugin.name] = plugin
    return plugin


def find(name: str) -> BackendPlugin | None:
    if name not in _plugins:
        target = _BUILT_IN.get(name) or _entry_point(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        register(getattr(importlib.import_module(module), attr))
    return _plugins[name]


def names() -> list[str]:
    found = set(_BUILT_IN) | set(_plugins) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(found)


def _entry_point(name: str) -> str | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return str(ep.value)
    return None
