"""The runtime: everything one process needs to move messages, built by that process's entry point.

The app is declarative: settings, routes, the monitor's subscriptions, perform hooks.
It opens no connection and runs nothing. Each process that does work builds one
Runtime from it and hands it down explicitly: the listener (and each swarm node,
after the fork), a Celery worker process (after the pool forked), TestClient. Nothing
below those entry points reaches back into the app for a service.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backends import Backend, registry
from .dlq import DeadLetters
from .errors import ConfigError
from .perform import PerformHook, PerformRunner, build_runner
from .perform.dead_letter import DeadLetterSink
from .perform.gates import gate_stages

if TYPE_CHECKING:
    from celery import Celery

    from .app import KBridge
    from .config import Settings
    from .instrumentation import Monitor
    from .producer import Producer
    from .routing import RouteTable


@dataclass
class Runtime:
    settings: Settings
    routes: RouteTable
    monitor: Monitor
    producer: Producer
    dead_letters: DeadLetterSink
    celery: Celery | None = None
    perform_hooks: Sequence[PerformHook] = ()  # the app's live list: an integration bound later still counts
    pid: int = field(default_factory=os.getpid)
    _backends: dict[str, Backend] = field(default_factory=dict, repr=False)
    _runners: dict[bool, PerformRunner] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, app: KBridge, dead_letters: DeadLetterSink | None = None) -> Runtime:
        """The composition root: a fresh runtime for this process (dead_letters: a stand-in, for tests)."""
        return cls(
            settings=app.settings,
            routes=app.routes,
            monitor=app.monitor,
            producer=app.producer,
            dead_letters=dead_letters if dead_letters is not None else DeadLetters(app.settings, app.monitor),
            celery=app.celery,
            perform_hooks=app.perform_hooks,
        )

    @property
    def client_id(self) -> str:
        return self.settings.client_id

    def backend(self, name: str) -> Backend:
        """One instance per backend name, built on first use in this process."""
        if name not in self._backends:
            plugin = registry.find(name)
            if plugin is None:
                raise ConfigError([f"backend {name!r} is unknown; known: {', '.join(registry.names())}"])
            self._backends[name] = plugin.build(self)
        return self._backends[name]

    def install_backend(self, name: str, backend: Backend) -> None:
        """Use backend for routes of that name in this runtime (TestClient's in-memory one, say)."""
        self._backends[name] = backend

    def runner(self, *, enforce_timeout: bool) -> PerformRunner:
        """The perform runner of this process. enforce_timeout: False where Celery enforces time limits."""
        if enforce_timeout not in self._runners:
            self._runners[enforce_timeout] = build_runner(
                self.dead_letters, monitor=self.monitor, hooks=self.perform_hooks, producer=self.producer,
                enforce_timeout=enforce_timeout, extra=gate_stages(self),
            )
        return self._runners[enforce_timeout]

    def close(self) -> None:
        """Flush and close what this process opened; the app's own producer is closed by its owner."""
        errors: list[BaseException] = []
        for backend in self._backends.values():
            try:
                backend.close()
            except Exception as exc:
                errors.append(exc)
        close: Any = getattr(self.dead_letters, "close", None)
        if close is not None:
            close()
        if errors:
            raise errors[0]
