"""All routes of one app, and lookups by route id (worker) and by group name (listener)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..dlq import UNROUTABLE_SUFFIX
from ..errors import ConfigError, UnknownRouteError
from .consumer_group import ConsumerGroup
from .names import name_problem
from .route import Route

if TYPE_CHECKING:
    from ..consumer import BaseConsumer


class RouteTable:
    def __init__(self, client_id: str, *, default_backend: str, has_celery: bool) -> None:
        self.client_id = client_id
        self.groups: dict[str, ConsumerGroup] = {}
        self._routes: dict[str, Route] = {}
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
            on_route=self.register, route_problems=self.route_problems,
        )
        self.groups[name] = group
        return group

    def topic_group(self, name: str, consumer: type[BaseConsumer] | None, options: dict[str, Any]) -> Route:
        """The app.topic() shorthand: a group named after the topic, registered only if the topic is valid.

        The group's name is the topic's, so a problem with it is reported with every problem of
        the topic in one ConfigError (an illegal name shows once, as the topic name).
        """
        problems = []
        if name in self.groups:
            problems.append(f"consumer group {name!r} is declared twice; app.topic({name!r}) declares a group "
                            "of that name: route the topic inside the existing group instead")
        group = ConsumerGroup(
            name, self.client_id, default_backend=self._default_backend, has_celery=self._has_celery,
            on_route=self.register, route_problems=self.route_problems,
        )
        route = group.add(name, consumer, options, problems)
        self.groups[name] = group
        return route

    def route_problems(self, route: Route) -> list[str]:
        """A pattern route must never consume kbridge's own topics or any route's dead letters: it would
        perform forged task bodies, dashboard reports, or a failure over and over."""
        own = [f"{self.client_id}{UNROUTABLE_SUFFIX}", f"{self.client_id}.kbridge.reports",
               f"{self.client_id}.kbridge.commands"]
        others = list(self._routes.values())
        problems = []
        if route.pattern is not None:
            where = f"pattern route {route.name!r} in consumer group {route.group_name!r}"
            for topic in [*own, *(r.dead_letter_topic for r in others)]:
                if route.matches(topic):
                    problems.append(f"{where}: pattern {route.pattern.pattern!r} matches {topic!r}, which is "
                                    "kbridge's own topic or a dead-letter topic; narrow the pattern")
        for other in others:
            if other.pattern is not None and other.matches(route.dead_letter_topic):
                problems.append(
                    f"topic {route.name!r} in consumer group {route.group_name!r}: its dead_letter_topic "
                    f"{route.dead_letter_topic!r} matches pattern route {other.name!r} "
                    f"({other.pattern.pattern!r}), which would consume its dead letters; narrow that pattern "
                    "or set another dead_letter_topic")
        return problems

    def register(self, route: Route) -> None:
        self._routes[route.route_id] = route

    def find(self, route_id: str) -> Route:
        try:
            return self._routes[route_id]
        except KeyError:
            known = ", ".join(sorted(self._routes)) or "none"
            raise UnknownRouteError(
                f"route {route_id!r} is not routed in app {self.client_id!r} (known routes: {known}); "
                "the listener and the workers must load the same routing"
            ) from None

    def select(self, names: list[str] | None) -> list[ConsumerGroup]:
        """The groups to listen to; every unknown or empty group is reported at once."""
        known = ", ".join(self.groups) or "none"
        problems = [f"unknown consumer group {n!r}; this app has: {known}" for n in names or [] if n not in self.groups]
        chosen = [self.groups[n] for n in names if n in self.groups] if names else list(self.groups.values())
        problems += [f"consumer group {g.name!r} routes no topic; add group.topic(...)"
                     for g in chosen if not g.routes()]
        if problems:
            raise ConfigError(problems)
        return chosen

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)

