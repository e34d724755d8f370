"""EventsConsumer: drops noise in the listener, records each performed event in Redis.

perform() keeps a per-offset run count, so anyone can count what ran twice
(at-least-once delivery allows it) and what never ran (it must not happen).
"""

from __future__ import annotations

import redis

from kbridge import BaseConsumer, before_enqueue

from .settings import STORE_URL

PERFORMED_KEY = "workers:events:performed"  # INCR per perform(), duplicates included
SEEN_KEY = "workers:events:seen"  # hash "<partition>:<offset>" -> times performed
TYPES_KEY = "workers:events:types"  # hash event type -> times performed

_store: redis.Redis | None = None


def store() -> redis.Redis:
    """One client per process, made lazily so each forked pool process opens its own connections."""
    global _store
    if _store is None:
        _store = redis.Redis.from_url(STORE_URL)
    return _store


def is_noise(payload: object) -> bool:
    """Heartbeats and test events are not business events; the listener commits them without a task."""
    return isinstance(payload, dict) and (payload.get("type") == "heartbeat" or payload.get("test") is True)


class EventsConsumer(BaseConsumer):
    @before_enqueue
    def not_noise(self) -> bool:
        return not is_noise(self.params.payload)

    def perform(self) -> None:
        payload = self.params.payload  # parsed here, in the worker
        kind = payload.get("type", "unknown") if isinstance(payload, dict) else "unknown"
        pipe = store().pipeline()
        pipe.incr(PERFORMED_KEY)
        pipe.hincrby(SEEN_KEY, f"{self.params.partition}:{self.params.offset}", 1)
        pipe.hincrby(TYPES_KEY, str(kind), 1)
        pipe.execute()
