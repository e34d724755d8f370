"""settings.KBRIDGE -> a KBridge app, with every problem in the dict reported at once.

    KBRIDGE = {
        "client_id": "shop",                                  # required
        "kafka": {"bootstrap_servers": "127.0.0.1:9092"},     # required; passed to kafka-python
        "celery": "shop.celery:app",                          # or "broker": "redis://...", or neither (inline)
        "shutdown_timeout": 30,                               # any other KBridge setting
    }

This module reads only the dict it is given, never django.conf.settings, so a
settings dict can be checked (and an app built) without a configured project.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from kbridge.app import KBridge
from kbridge.config import Settings
from kbridge.errors import ConfigError

if TYPE_CHECKING:
    from celery import Celery

SETTING = "KBRIDGE"
CELERY_KEYS = ("celery", "broker")
KBRIDGE_KEYS = tuple(f.name for f in fields(Settings))
REQUIRED = {
    "client_id": "\"client_id\": \"shop\" (consumer group ids are '<client_id>_<group name>')",
    "kafka": "\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9092\"} (passed to kafka-python)",
}
# Stand-ins for missing required keys, so Settings.build reports only the problems of keys that are present.
_STAND_INS: dict[str, Any] = {"client_id": "stand-in", "kafka": {"bootstrap_servers": "stand-in:9092"}}
EXAMPLE = (
    'KBRIDGE = {"client_id": "shop", "kafka": {"bootstrap_servers": "127.0.0.1:9092"}, '
    '"celery": "shop.celery:app"}'
)


class KBridgeSettingsError(ConfigError, ImproperlyConfigured):
    """settings.KBRIDGE is missing or wrong. A ConfigError for kbridge code, ImproperlyConfigured for Django's."""

    def __init__(self, problems: Iterable[str]) -> None:
        super().__init__(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        self.args = (f"settings.{SETTING} has {len(self.problems)} problem(s):\n{lines}",)


def build_app(conf: object) -> KBridge:
    """The KBridge app described by a KBRIDGE settings dict; routes are added by the caller."""
    kwargs, celery = read(conf)
    return KBridge(celery=celery, **kwargs)


def read(conf: object) -> tuple[dict[str, Any], Celery | None]:
    """(KBridge keyword arguments, Celery app or None), or one KBridgeSettingsError listing every problem."""
    if not isinstance(conf, Mapping):
        what = "is not set" if conf is None else f"must be a dict, got {type(conf).__name__}"
        raise KBridgeSettingsError([f"settings.{SETTING} {what}; add to your settings, e.g. {EXAMPLE}"])

    problems: list[str] = []
    known = (*KBRIDGE_KEYS, *CELERY_KEYS)
    for key in sorted(set(conf) - set(known), key=str):
        close = difflib.get_close_matches(str(key), known, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        problems.append(f"unknown key {key!r}; {guess}known keys: {', '.join(known)}")
    for key, example in REQUIRED.items():
        if key not in conf:
            problems.append(f"{key!r} is required, e.g. {example}")

    kwargs = {k: v for k, v in conf.items() if k in KBRIDGE_KEYS}
    try:
        Settings.build({**{k: v for k, v in _STAND_INS.items() if k not in kwargs}, **kwargs})
    except ConfigError as exc:
        problems.extend(exc.problems)

    celery: Celery | None = None
    if all(key in conf for key in CELERY_KEYS):
        problems.append("give either 'celery' (your Celery app, e.g. 'shop.celery:app') or 'broker', not both")
    elif "celery" in conf:
        celery, problem = _celery_app(conf["celery"])
        problems.extend([problem] if problem else [])
    elif "broker" in conf:
        if isinstance(conf["broker"], str) and conf["broker"]:
            celery = _broker_app(str(conf.get("client_id", "kbridge")), conf["broker"])
        else:
            problems.append(f"'broker' must be a broker URL such as 'redis://127.0.0.1:6379/0', got {conf['broker']!r}")

    if problems:
        raise KBridgeSettingsError(problems)
    return kwargs, celery


def _celery_app(spec: object) -> tuple[Celery | None, str | None]:
    """The Celery app named by 'module:attribute' (or 'module.attribute'), or given as an object."""
    from celery import Celery

    if isinstance(spec, Celery):
        return spec, None
    hint = "name your Celery app as 'module:attribute', e.g. 'shop.celery:app'"
    if not isinstance(spec, str) or not spec.strip(". :"):
        return None, f"'celery' must be a Celery app or its import path; {hint}; got {spec!r}"
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return None, f"'celery': cannot import {module_name!r} from {spec!r}: {exc}; {hint}"
    if not hasattr(module, attr):
        spec_ = getattr(module, "__spec__", None)
        if getattr(spec_, "_initializing", False):
            return None, (
                f"'celery': {module_name!r} is still being imported, so {attr!r} is not defined yet; "
                f"if {module_name} calls django.setup(), define the Celery app before that call"
            )
        return None, f"'celery': module {module_name!r} has no attribute {attr!r}; {hint}"
    found = getattr(module, attr)
    if not isinstance(found, Celery):
        return None, f"'celery': {spec!r} is a {type(found).__name__}, not a Celery app; {hint}"
    return found, None


def _broker_app(name: str, broker: str) -> Celery:
    """A Celery app for projects without their own. CELERY_* Django settings still apply (read lazily,
    when the app is first used); the broker given here wins over CELERY_BROKER_URL."""
    from celery import Celery

    app = Celery(name, broker=broker)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    return app
