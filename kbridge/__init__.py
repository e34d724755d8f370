"""kbridge: Kafka topics to Celery tasks, at least once."""

from .app import KBridge
from .callbacks import after_fetch, after_poll, before_poll, before_stop
from .consumer import BaseConsumer, before_enqueue
from .errors import ConfigError, EnqueueError, KBridgeError, UnknownRouteError
from .params import Params, ParamsBatch, json_deserializer
from .producer import Delivery, ProduceError, flush, json_serializer, produce, produce_async
from .responder import Responder, ResponderError, ResponderTopic
from .routing.mapper import IdentityMapper, PrefixMapper, TopicMapper

__version__ = "0.1.0"

__all__ = [
    "BaseConsumer",
    "ConfigError",
    "Delivery",
    "EnqueueError",
    "IdentityMapper",
    "KBridge",
    "KBridgeError",
    "Params",
    "ParamsBatch",
    "PrefixMapper",
    "ProduceError",
    "Responder",
    "ResponderError",
    "ResponderTopic",
    "TopicMapper",
    "UnknownRouteError",
    "after_fetch",
    "after_poll",
    "before_enqueue",
    "before_poll",
    "before_stop",
    "flush",
    "json_deserializer",
    "json_serializer",
    "produce",
    "produce_async",
    "__version__",
]
