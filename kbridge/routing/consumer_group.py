"""A consumer group: the topics one Kafka consumer subscribes to, under group id <client_id>_<name>."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .patterns import compile_pattern, pattern_problems
from .route import Route, build_route

if TYPE_CHECKING:
    from ..consumer import BaseConsumer

MATCHED_CACHE = 10_000  # topic names remembered with their pattern route


class ConsumerGroup:
    def __init__(
        self,
        name: str,
        client_id: str,
        *,
        default_backend: str,
        has_celery: bool,
        on_route: Callable[[Route], None] | None = None,
        route_problems: Callable[[Route], list[str]] | None = None,
    ) -> None:
        self.name = name
        self.id = f"{client_id}_{name}"
        self.topics: dict[str, Route] = {}
        self.patterns: dict[str, Route] = {}  # group.pattern() routes, by name
        self._matched: dict[str, Route] = {}  # topic name -> its pattern route, once looked up
        self._default_backend = default_backend
        self._has_celery = has_celery
        self._on_route = on_route
        self._route_problems = route_problems  # the app's checks of a route against all its other routes

    def topic(self, name: str, consumer: type[BaseConsumer] | None = None, **options: Any) -> Route:
        """Route name to consumer; every problem of the call (a second route of name included) is raised at once."""
        return self.add(name, consumer, options)

    def pattern(self, name: str, regex: str | re.Pattern[str], consumer: type[BaseConsumer] | None = None,
                **options: Any) -> Route:
        """Route every topic whose whole name matches regex to consumer; the route id is <group_id>/<name>."""
        where = f"pattern route {name!r} in consumer group {self.name!r}"
        compiled, problems = compile_pattern(where, regex)
        return self.add(name, consumer, options, problems, pattern=compiled)

    def routes(self) -> list[Route]:
        """Every route of the group: its topics, then its patterns."""
        return [*self.topics.values(), *self.patterns.values()]

    def route_for(self, topic: str) -> Route:
        """The route of a topic (a route name, after the topic mapper): its own, else the first matching pattern."""
        route = self.topics.get(topic) or self._matched.get(topic)
        if route is None:
            route = next((r for r in self.patterns.values() if r.matches(topic)), None)
            if route is None:
                raise KeyError(topic)
            if len(self._matched) >= MATCHED_CACHE:
                self._matched.clear()  # names come from Kafka, or from data in tools (dead-letter origins)
            self._matched[topic] = route
        return route

    def add(self, name: str, consumer: type[BaseConsumer] | None, options: dict[str, Any],
            problems: list[str] | None = None, pattern: re.Pattern[str] | None = None) -> Route:
        """topic() with options as a dict; problems: the caller's own findings, raised with these in one ConfigError."""
        found = list(problems or [])
        if name in self.topics or name in self.patterns:
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
            if pattern is not None:
                route = replace(route, pattern=pattern)
                found.extend(pattern_problems(f"pattern route {name!r} in consumer group {self.name!r}", route))
        except ConfigError as exc:
            found.extend(exc.problems)
        else:
            if self._route_problems is not None:
                found.extend(self._route_problems(route))
        if found:
            raise ConfigError(found)
        (self.topics if pattern is None else self.patterns)[name] = route
        if self._on_route is not None:
            self._on_route(route)
        return route

    def __enter__(self) -> ConsumerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and not self.topics and not self.patterns:
            raise ConfigError([f"consumer group {self.name!r} routes no topic; add group.topic(...) inside it"])

    def __repr__(self) -> str:
        return f"<ConsumerGroup {self.id} topics={list(self.topics)} patterns={list(self.patterns)}>"
