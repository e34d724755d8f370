"""The topic mapper: logical topic names in the app, the names Kafka really has on the wire.

Some hosting providers require every topic to carry an account prefix. With a mapper,
routes, `self.params.topic`, dead-letter topics, `produce()` and responders all keep
their logical names, and only the Kafka clients see the mapped ones (Karafka 1.x's
topic_mapper):

- `outgoing(route_name) -> kafka_name` for every name kbridge hands to Kafka: the
  subscription, dead letters, produced messages;
- `incoming(kafka_name) -> route_name` for every name Kafka hands back: the topic of a
  fetched record, which selects its route.

The two must be inverses over the routed topics; the listener checks this before it
subscribes, so a mapper bug is a config error, not silently unrouted messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from ..errors import ConfigError
from .names import name_problem


@runtime_checkable
class TopicMapper(Protocol):
    """Anything with these two methods; they must be pure and quick (they run per poll and per produce)."""

    def incoming(self, kafka_name: str) -> str: ...

    def outgoing(self, route_name: str) -> str: ...


class IdentityMapper:
    """The default: Kafka names are the route names."""

    def incoming(self, kafka_name: str) -> str:
        return kafka_name

    def outgoing(self, route_name: str) -> str:
        return route_name

    def __repr__(self) -> str:
        return "IdentityMapper()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityMapper)

    def __hash__(self) -> int:
        return hash(IdentityMapper)


class PrefixMapper:
    """Kafka names are the route names with a fixed prefix, e.g. a hosting provider's account prefix.

    incoming() strips the prefix; a name without it is returned unchanged, so a topic that
    is not ours fails the route lookup with its real name rather than a mangled one.
    """

    def __init__(self, prefix: str) -> None:
        if (problem := name_problem("topic prefix", prefix)) is not None:
            raise ConfigError([f"PrefixMapper: {problem}"])
        self.prefix = prefix

    def incoming(self, kafka_name: str) -> str:
        return kafka_name[len(self.prefix):] if kafka_name.startswith(self.prefix) else kafka_name

    def outgoing(self, route_name: str) -> str:
        return f"{self.prefix}{route_name}"

    def __repr__(self) -> str:
        return f"PrefixMapper({self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrefixMapper) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash((PrefixMapper, self.prefix))


def mapper_problems(value: object) -> list[str]:
    """Why value cannot be a topic mapper (the topic_mapper setting), or nothing."""
    missing = [m for m in ("incoming", "outgoing") if not callable(getattr(value, m, None))]
    if not missing:
        return []
    return [
        f"topic_mapper must have callable incoming(kafka_name) and outgoing(route_name) methods "
        f"(e.g. kbridge.PrefixMapper('acme.')); {value!r} lacks {' and '.join(missing)}"
    ]


def kafka_names(mapper: TopicMapper, names: Iterable[str]) -> dict[str, str]:
    """Kafka name -> route name for the given route names; every broken mapping reported at once.

    A mapped name must be a legal Kafka topic name and map back to its route name (which
    also rules out two routes sharing one Kafka topic).
    """
    found: dict[str, str] = {}
    problems: list[str] = []
    for name in names:
        try:
            kafka = mapper.outgoing(name)
            back = mapper.incoming(kafka)
        except Exception as exc:
            problems.append(f"topic_mapper {mapper!r} failed on {name!r}: {type(exc).__name__}: {exc}")
            continue
        if (p := name_problem(f"mapped topic name (of {name!r})", kafka)) is not None:
            problems.append(f"topic_mapper {mapper!r}: {p}")
        elif back != name:
            problems.append(
                f"topic_mapper {mapper!r}: incoming(outgoing({name!r})) is {back!r}, not {name!r}; "
                "incoming() must undo outgoing()"
            )
        else:
            found[kafka] = name
    if problems:
        raise ConfigError(problems)
    return found
