"""The listener: poll -> route -> filter -> enqueue -> commit, one Kafka consumer per consumer group."""

from .process import ListenerProcess, listener_process
from .processor import GroupProcessor, Stats

__all__ = ["GroupProcessor", "ListenerProcess", "Stats", "listener_process"]
