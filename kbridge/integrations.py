"""Framework integrations, found by name: core calls none of them by import.

KBridge(app=framework_app) and app.init_app(framework_app) look up the integration
for the framework that framework_app belongs to (the top-level package of its class,
e.g. "flask") among the `kbridge.integrations` entry points. An integration is a
callable (kbridge_app, framework_app) that completes and binds the app; it calls
into core, never the other way round. kbridge ships one for Flask; Django's is an
INSTALLED_APPS entry and needs none.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .errors import ConfigError

ENTRY_POINT_GROUP = "kbridge.integrations"


def bind(kbridge_app: Any, framework_app: object) -> None:
    framework = type(framework_app).__module__.partition(".")[0]
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if framework not in found:
        raise ConfigError([
            f"no kbridge integration for {type(framework_app).__qualname__} from {framework!r}; installed "
            f"integrations: {', '.join(sorted(found)) or 'none'} (is kbridge installed, e.g. `pip install -e .`?)"
        ])
    found[framework].load()(kbridge_app, framework_app)
