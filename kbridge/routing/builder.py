"""All routes of one app, and lookups by route id (worker) and by group name (listener)."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import ConfigError, UnknownRouteError
from .consumer_group import ConsumerGroup
from .names import name_problem
from .topic import Topic


class Builder:
    def __init__(self, client_id: str, *, default_backend: str, has_celery: bool) -> None:
        self.client_id = client_id
        self.groups: dict[str, ConsumerGroup] = {}
        self._routes: dict[str, Topic] = {}
        self._default_backend = default_backend
        self._has_celery = has_celery

    def consumer_group(self, name: str) -> ConsumerGroup:
        if (problem := name_problem("consumer group name", name)) is not None:
            raise ConfigError([problem])
        if name in self.groups:
            raise ConfigError(
                [f"consumer group {name!r} is declared twice; declare it once and route all its topics there"]
            )
        group = ConsumerGroup(
            name, self.client_id, default_backend=self._default_backend, has_celery=self._has_celery,
            on_route=self.register,
        )
        self.groups[name] = group
        return group

    def register(self, route: Topic) -> None:
        self._routes[route.route_id] = route

    def find(self, route_id: str) -> Topic:
        try:
            return self._routes[route_id]
        except KeyError:
            known = ", ".join(sorted(self._routes)) or "none"
            raise UnknownRouteError(
                f"route {route_id!r} is not routed in app {self.client_id!r} (known routes: {known}); "
                "the listener and the workers must load the same routing"
            ) from None

    def select(self, names: list[str] | None) -> list[ConsumerGroup]:
        """The groups to listen to; every unknown name is reported at once."""
        if not names:
            return list(self.groups.values())
        unknown = [n for n in names if n not in self.groups]
        if unknown:
            known = ", ".join(self.groups) or "none"
            raise ConfigError([f"unknown consumer group {n!r}; this app has: {known}" for n in unknown])
        return [self.groups[n] for n in names]

    def __iter__(self) -> Iterator[Topic]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)

