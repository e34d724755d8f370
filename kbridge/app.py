"""KBridge: settings, routing and the Celery binding of one application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backends import Backend
from .backends.inline import InlineBackend
from .config import Settings
from .dlq import DeadLetters
from .glass import PerformHook
from .routing import Builder, ConsumerGroup, Topic
from .worker import register_task

if TYPE_CHECKING:
    from celery import Celery

    from .consumer import BaseConsumer


class KBridge:
    def __init__(
        self,
        client_id: str,
        kafka: dict[str, Any],
        celery: Celery | None = None,
        **settings: Any,
    ) -> None:
        """settings: shutdown_timeout, max_poll_records, poll_timeout, enqueue_backoff_max,
        dead_letter_timeout. Every problem, unknown keys included, is reported at once."""
        self.settings = Settings.build({"client_id": client_id, "kafka": kafka, **settings})
        self.celery = celery
        self.routes = Builder(
            self.settings.client_id,
            default_backend="celery" if celery is not None else "inline",
            has_celery=celery is not None,
        )
        self._backends: dict[str, Backend] = {}
        self.dead_letters = DeadLetters(self.settings)
        # Context managers around every perform(), in the worker and inline; framework
        # integrations add theirs (an app context, database connection hygiene).
        self.perform_hooks: list[PerformHook] = []
        if celery is not None:
            # Registered at import time, so an unmodified `celery -A proj worker` runs kbridge tasks.
            self.perform_task = register_task(celery, self)

    @property
    def client_id(self) -> str:
        return self.settings.client_id

    def consumer_group(self, name: str) -> ConsumerGroup:
        return self.routes.consumer_group(name)

    def topic(self, name: str, consumer: type[BaseConsumer] | None = None, **options: Any) -> Topic:
        """Shorthand: a consumer group named after the topic, holding just that topic."""
        return self.routes.topic_group(name, consumer, options)

    def backend(self, name: str) -> Backend:
        """One backend instance per kind, built on first use in the process that uses it."""
        if name not in self._backends:
            if name == "celery":
                from .backends.celery import CeleryBackend

                assert self.celery is not None  # checked when the route was built
                self._backends[name] = CeleryBackend(self.celery)
            else:
                self._backends[name] = InlineBackend(self.dead_letters, self.perform_hooks)
        return self._backends[name]

    def __repr__(self) -> str:
        return f"<KBridge {self.client_id} routes={len(self.routes)}>"
