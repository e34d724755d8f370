"""Pattern routes: group.pattern(name, regex, ...) routes every topic whose whole name matches regex.

The listener subscribes with one regular expression (kafka-python's subscribe(pattern=...)),
so a matching topic created while it runs is assigned at the next metadata refresh
(metadata_max_age_ms, 5 minutes by default). Exact topic routes win over patterns; among
patterns the first declared wins. A pattern that matches its own dead-letter topic is refused:
it would consume its own letters forever.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import ConfigError
from .mapper import IdentityMapper, PrefixMapper, TopicMapper, kafka_names
from .route import Route


def compile_pattern(where: str, regex: object) -> tuple[re.Pattern[str] | None, list[str]]:
    if isinstance(regex, re.Pattern):
        regex = regex.pattern
    if not isinstance(regex, str) or not regex:
        return None, [f"{where}: the pattern must be a non-empty regular expression string, got {regex!r}"]
    try:
        return re.compile(regex), []
    except re.error as exc:
        return None, [f"{where}: pattern {regex!r} is not a valid regular expression: {exc}"]


def pattern_problems(where: str, route: Route) -> list[str]:
    if route.pattern is not None and route.matches(route.dead_letter_topic):
        return [f"{where}: pattern {route.pattern.pattern!r} matches its own dead_letter_topic "
                f"{route.dead_letter_topic!r}, so the route would consume its own dead letters; narrow the "
                "pattern or set a dead_letter_topic it does not match"]
    return []


def subscription(mapper: TopicMapper, topics: Iterable[str], patterns: Iterable[Route]) -> tuple[list[str], str | None]:
    """What the group's consumer subscribes to: a list of Kafka topic names, or with any pattern route, one
    regular expression over Kafka names that covers the exact topics too (Kafka takes one or the other)."""
    names = list(kafka_names(mapper, topics))
    routes = list(patterns)
    if not routes:
        return names, None
    if isinstance(mapper, IdentityMapper):
        prefix = ""
    elif isinstance(mapper, PrefixMapper):
        prefix = re.escape(mapper.prefix)
    else:
        raise ConfigError([f"pattern routes need the default topic mapper or a PrefixMapper; {mapper!r} cannot "
                           "translate a regular expression into Kafka names"])
    parts = [re.escape(n) for n in names] + [f"{prefix}(?:{r.pattern.pattern})" for r in routes if r.pattern]
    return [], "^(?:" + "|".join(parts) + ")$"
