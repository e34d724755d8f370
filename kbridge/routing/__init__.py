"""Routing: which consumer class handles which topic, grouped into Kafka consumer groups."""

from .builder import Builder
from .consumer_group import ConsumerGroup
from .topic import Topic

__all__ = ["Builder", "ConsumerGroup", "Topic"]
