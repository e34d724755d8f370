"""kbridge: Kafka topics to Celery tasks, at least once."""

from .app import KBridge
from .consumer import BaseConsumer, before_enqueue
from .errors import ConfigError, EnqueueError, KBridgeError, UnknownRouteError
from .params import Params, ParamsBatch, json_deserializer

__version__ = "0.1.0"

__all__ = [
    "BaseConsumer",
    "ConfigError",
    "EnqueueError",
    "KBridge",
    "KBridgeError",
    "Params",
    "ParamsBatch",
    "UnknownRouteError",
    "before_enqueue",
    "json_deserializer",
    "__version__",
]
