"""Routing: which consumer class handles which topic, grouped into Kafka consumer groups."""

from .consumer_group import ConsumerGroup
from .route import Route
from .table import RouteTable

__all__ = ["ConsumerGroup", "Route", "RouteTable"]
