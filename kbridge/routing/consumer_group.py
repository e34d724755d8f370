"""A consumer group: the topics one Kafka consumer subscribes to, under group id <client_id>_<name>."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .route import Route, build_route

if TYPE_CHECKING:
    from ..consumer import BaseConsumer


class ConsumerGroup:
    def __init__(
        self,
        name: str,
        client_id: str,
        *,
        default_backend: str,
        has_celery: bool,
        on_route: Callable[[Route], None] | None = None,
    ) -> None:
        self.name = name
        self.id = f"{client_id}_{name}"
        self.topics: dict[str, Route] = {}
        self._default_backend = default_backend
        self._has_celery = has_celery
        self._on_route = on_route

    def topic(self, name: str, consumer: type[BaseConsumer] | None = None, **options: Any) -> Route:
        """Route name to consumer; every problem of the call (a second route of name included) is raised at once."""
        return self.add(name, consumer, options)

    def add(self, name: str, consumer: type[BaseConsumer] | None, options: dict[str, Any],
            problems: list[str] | None = None) -> Route:
        """topic() with options as a dict; problems: the caller's own findings, raised with these in one ConfigError."""
        found = list(problems or [])
        if name in self.topics:
            found.append(f"topic {name!r} is routed twice in consumer group {self.name!r}; route it once")
        try:
            route = build_route(
                name,
                group_name=self.name,
                group_id=self.id,
                default_backend=self._default_backend,
                has_celery=self._has_celery,
                options={**options, "consumer": consumer},
            )
        except ConfigError as exc:
            found.extend(exc.problems)
        if found:
            raise ConfigError(found)
        self.topics[name] = route
        if self._on_route is not None:
            self._on_route(route)
        return route

    def __enter__(self) -> ConsumerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and not self.topics:
            raise ConfigError([f"consumer group {self.name!r} routes no topic; add group.topic(...) inside it"])

    def __repr__(self) -> str:
        return f"<ConsumerGroup {self.id} topics={list(self.topics)}>"
