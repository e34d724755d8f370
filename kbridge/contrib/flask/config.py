"""KBridge values from a Flask app's config: KBRIDGE_<SETTING> keys, with explicit KBridge(...) kwargs winning.

Why kwargs win: they are written next to the routes, in code that ships with them (the
client_id names the Kafka consumer groups), while config varies per deployment. A config
key that a kwarg overrides with a different value is logged, never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from celery import Celery

from ...config import Settings

if TYPE_CHECKING:
    from flask import Flask

    from ...app import KBridge

log = logging.getLogger("kbridge.contrib.flask")

PREFIX = "KBRIDGE_"
CELERY_KEY = "KBRIDGE_CELERY"
# Settings a Celery app that kbridge builds from a broker URL gets: the acks_late promise through broker outages.
BUILT_CELERY_CONF = {
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": None,
    "worker_cancel_long_running_tasks_on_connection_loss": True,
}


def config_key(setting: str) -> str:
    return PREFIX + setting.upper()


def setting_keys() -> dict[str, str]:
    """Flask config key -> KBridge setting, for every setting (client_id and kafka included)."""
    return {config_key(f.name): f.name for f in fields(Settings)}


@dataclass
class FlaskValues:
    """What init_app hands to KBridge.configure, and where each value came from (for error messages)."""

    values: dict[str, Any] = field(default_factory=dict)
    celery: Celery | None = None
    problems: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def explain(self, problem: str) -> str:
        """Append where the faulty setting came from, or where to give it when it is missing."""
        name = problem.split(" ", 1)[0].split("[", 1)[0]
        if name not in self.sources and config_key(name) not in setting_keys():
            return problem
        where = self.sources.get(name) or f"set flask_app.config[{config_key(name)!r}] or pass KBridge({name}=...)"
        return f"{problem} [{where}]"


def read(kbridge_app: KBridge, flask_app: Flask) -> FlaskValues:
    config: Mapping[str, Any] = flask_app.config
    keys = setting_keys()
    out = FlaskValues()
    for key in sorted(k for k in config if k.startswith(PREFIX) and k not in keys and k != CELERY_KEY):
        out.problems.append(
            f"unknown Flask config key {key!r}; kbridge reads {', '.join(sorted([*keys, CELERY_KEY]))}"
        )
    for key, name in keys.items():
        if name in kbridge_app.explicit:
            out.values[name] = kbridge_app.explicit[name]
            out.sources[name] = f"from KBridge({name}=...)"
            _note_override(config, key, name, kbridge_app.explicit[name])
        elif key in config:
            out.values[name] = config[key]
            out.sources[name] = f"from flask_app.config[{key!r}]"
    # Unknown kwargs go through too: Settings reports them with the known names.
    out.values.update({k: v for k, v in kbridge_app.explicit.items() if k not in keys.values() and k != "celery"})
    if "celery" in kbridge_app.explicit:
        out.celery = kbridge_app.explicit["celery"]
        _note_override(config, CELERY_KEY, "celery", out.celery)
    elif CELERY_KEY in config:
        out.celery = _celery_from(config[CELERY_KEY], out.values.get("client_id"), flask_app, out.problems)
    return out


def _celery_from(value: object, client_id: object, flask_app: Flask, problems: list[str]) -> Celery | None:
    """KBRIDGE_CELERY: the user's Celery app, or a broker URL kbridge builds a minimal Celery app for."""
    if isinstance(value, Celery):
        return value
    if isinstance(value, str) and value:
        built = Celery(client_id if isinstance(client_id, str) else flask_app.import_name, broker=value)
        built.conf.update(BUILT_CELERY_CONF)
        return built
    problems.append(
        f"{CELERY_KEY} must be a Celery app or a broker URL such as 'redis://127.0.0.1:6379/0', got {value!r}"
    )
    return None


def _note_override(config: Mapping[str, Any], key: str, name: str, explicit: object) -> None:
    if key in config and config[key] is not explicit and config[key] != explicit:
        log.warning("flask config %s is ignored: KBridge(%s=...) was given explicitly and wins", key, name)
