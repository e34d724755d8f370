"""The listener: poll -> route -> filter -> enqueue -> commit, one Kafka consumer per consumer group."""

from .processor import GroupProcessor, Stats
from .server import Server

__all__ = ["GroupProcessor", "Server", "Stats"]
