"""Which route a Kafka topic name reaches, as a listener resolves it.

Tools that act on a topic named by data (a dead letter's origin header, a pause command) ask
here, so they accept exactly what a listener would route: one of a group's own topics, else
its first matching pattern, through the topic mapper and back.
"""

from __future__ import annotations

from collections.abc import Iterable

from .consumer_group import ConsumerGroup
from .mapper import TopicMapper
from .route import Route


def route_of_kafka_topic(groups: Iterable[ConsumerGroup], mapper: TopicMapper, topic: str) -> Route | None:
    """The route the first of groups gives topic (a Kafka name), or None: not routed, or not a name the mapper
    gives."""
    try:
        name = mapper.incoming(topic)
        if mapper.outgoing(name) != topic:
            return None
    except Exception:  # a custom mapper refusing a name it does not know: the name comes from data
        return None
    for group in groups:
        try:
            return group.route_for(name)
        except KeyError:
            continue
    return None
