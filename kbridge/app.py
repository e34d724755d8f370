"""KBridge: the declarative app. Settings, the route table, the monitor's subscriptions and perform hooks.

Creating one, or importing the module that does, opens no connection and starts
nothing. The only thing it does beyond recording declarations is what an unmodified
`celery -A proj worker` needs: the celery backend registers its task on the given
Celery app. Whatever moves messages (the listener, a worker process, TestClient)
builds its own kbridge.runtime.Runtime from the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import integrations
from .backends import registry
from .config import Settings
from .errors import ConfigError, KBridgeError
from .instrumentation import Monitor
from .perform import PerformHook
from .producer import Delivery, Headers, Producer, Serializer, register_app
from .routing import ConsumerGroup, Route, RouteTable
from .routing.names import name_problem

if TYPE_CHECKING:
    from concurrent.futures import Future

    from celery import Celery
    from flask import Flask

    from .consumer import BaseConsumer


class KBridge:
    def __init__(
        self,
        client_id: str | None = None,
        kafka: dict[str, Any] | None = None,
        celery: Celery | None = None,
        *,
        app: Flask | None = None,
        **settings: Any,
    ) -> None:
        """settings: shutdown_timeout, max_poll_records, poll_timeout, enqueue_backoff_max,
        dead_letter_timeout. Every problem, unknown keys included, is reported at once.

        Given kafka=, the app is complete at once. Without it (or given a Flask app=) it is
        completed by a framework integration, e.g. init_app(flask_app), which reads the rest
        from the framework's config; the keyword arguments given here win over that config.
        Routes may be declared before then only if client_id= is given here, because group
        ids and route ids are made from it.
        """
        self.celery = celery
        # What the caller passed explicitly, so a framework integration can let it win over config.
        self.explicit: dict[str, Any] = {
            k: v for k, v in {"client_id": client_id, "kafka": kafka, "celery": celery, **settings}.items()
            if v is not None
        }
        self._settings: Settings | None = None
        self._producer: Producer | None = None
        self._routes: RouteTable | None = None
        self._routes_have_celery = celery is not None
        self._task_celery: Celery | None = None
        # Context managers around every perform(), in the worker and inline; framework
        # integrations add theirs (an app context, database connection hygiene).
        self.perform_hooks: list[PerformHook] = []
        self.monitor = Monitor()  # app.monitor.subscribe("perform.failed", fn); see instrumentation.EVENTS
        if app is not None:
            self.init_app(app)
        elif kafka is not None:
            self.configure({"client_id": client_id, "kafka": kafka, **settings}, celery)
        else:
            if client_id is not None:
                if (problem := name_problem("client_id", client_id)) is not None:
                    raise ConfigError([problem])
                self._routes = self._new_builder(client_id, celery)
            if celery is not None:
                self._register(celery)

    def configure(
        self, values: dict[str, Any], celery: Celery | None = None, problems: list[str] | None = None
    ) -> None:
        """Validate settings and bind Celery and routing; a framework integration calls it again to rebind.

        problems: the caller's own findings, reported with these in one ConfigError.
        """
        found = list(problems or [])
        settings: Settings | None = None
        try:
            settings = Settings.build(values)
        except ConfigError as exc:
            found.extend(exc.problems)
        given = self.explicit.get("celery")
        if given is not None and celery is not None and celery is not given:
            found.append("a different Celery app than the one given to KBridge(celery=...); give it in one place")
        celery = celery if celery is not None else given
        if settings is not None and self._routes is not None and self._routes.groups:
            found.extend(self._routing_problems(settings.client_id, celery))
        if found:
            raise ConfigError(found)
        assert settings is not None
        self._settings = settings
        if self._producer is not None:
            self._producer.close()
        self._producer = Producer(settings, self.monitor)
        register_app(self)  # the default app of kbridge.produce() (see kbridge.producer)
        if self._routes is None or not self._routes.groups:
            self._routes = self._new_builder(settings.client_id, celery)
        if celery is not None and celery is not self._task_celery:
            self._register(celery)
        self.celery = celery

    def _register(self, celery: Celery) -> None:
        self.celery = celery
        plugin = registry.find("celery")
        assert plugin is not None
        plugin.bind(self)
        self._task_celery = celery

    @property
    def perform_task(self) -> Any:
        """The registered kbridge.perform task of this app's Celery app."""
        from .backends.celery.task import TASK_NAME

        if self._task_celery is None:
            raise KBridgeError(f"{self!r} has no Celery app: give KBridge(celery=...)")
        return self._task_celery.tasks[TASK_NAME]

    def _new_builder(self, client_id: str, celery: Celery | None) -> RouteTable:
        self._routes_have_celery = celery is not None
        return RouteTable(
            client_id,
            default_backend="celery" if celery is not None else "inline",
            has_celery=celery is not None,
        )

    def _routing_problems(self, client_id: str, celery: Celery | None) -> list[str]:
        """Routes already declared were built for a client_id and a backend default; both must still hold."""
        assert self._routes is not None
        problems = []
        if client_id != self._routes.client_id:
            problems.append(
                f"client_id {client_id!r} differs from {self._routes.client_id!r}, under which routes were "
                "already declared (group ids are '<client_id>_<group>'); give client_id in one place"
            )
        if (celery is not None) != self._routes_have_celery:
            had = "with" if self._routes_have_celery else "without"
            problems.append(
                f"routes were declared {had} a Celery app, which set their default backend; "
                "pass celery= to KBridge(...) where the routes are declared, not only in the config"
            )
        return problems

    def init_app(self, app: Flask) -> None:
        """Complete this app from a web framework's app and bind to it, e.g. a Flask app's KBRIDGE_* config.

        The integration is found by the framework's name among the installed `kbridge.integrations`
        entry points (kbridge.contrib.flask for Flask), so core never imports one.
        """
        integrations.bind(self, app)

    @property
    def configured(self) -> bool:
        return self._settings is not None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise KBridgeError(f"{self!r} is not configured yet: {_COMPLETE_HINT}")
        return self._settings

    @property
    def routes(self) -> RouteTable:
        if self._routes is None:
            raise ConfigError([
                "routes cannot be declared before the client_id is known (group ids are '<client_id>_<group>'): "
                "pass client_id= to KBridge(...), or declare routes after init_app()"
            ])
        return self._routes

    @property
    def producer(self) -> Producer:
        """This app's producing side (kbridge.producer): one lazily created KafkaProducer per process."""
        if self._producer is None:
            raise KBridgeError(f"{self!r} is not configured yet: {_COMPLETE_HINT}")
        return self._producer

    @producer.setter
    def producer(self, value: Producer) -> None:
        self._producer = value

    def produce(
        self,
        topic: str,
        payload: Any,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        *,
        serializer: Serializer | None = None,
    ) -> Delivery:
        """Send one message to topic (a logical name: the topic mapper applies) and wait for Kafka's ack.

        payload: JSON-serialized unless serializer= is given; bytes are sent untouched, None is a
        tombstone. Raises ProduceError, naming the topic and the cause, if Kafka did not take it.
        """
        return self.producer.produce(topic, payload, key, headers, partition, serializer=serializer)

    def produce_async(
        self,
        topic: str,
        payload: Any,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        *,
        serializer: Serializer | None = None,
    ) -> Future[Delivery]:
        """Send without waiting: a future resolving to a Delivery, or failing with ProduceError."""
        return self.producer.produce_async(topic, payload, key, headers, partition, serializer=serializer)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message this process sent through this app is acknowledged or failed."""
        self.producer.flush(timeout)

    @property
    def client_id(self) -> str:
        if self._settings is None and self._routes is not None:
            return self._routes.client_id
        return self.settings.client_id

    def consumer_group(self, name: str) -> ConsumerGroup:
        return self.routes.consumer_group(name)

    def topic(self, name: str, consumer: type[BaseConsumer] | None = None, **options: Any) -> Route:
        """Shorthand: a consumer group named after the topic, holding just that topic."""
        return self.routes.topic_group(name, consumer, options)

    def __repr__(self) -> str:
        if self._routes is None:
            return "<KBridge (no client_id yet)>"
        state = "" if self.configured else " not configured"
        return f"<KBridge {self._routes.client_id}{state} routes={len(self._routes)}>"


_COMPLETE_HINT = "give KBridge(kafka=...), or call init_app(flask_app) with KBRIDGE_* config"
