"""The before() stages a process's runner needs for its routes: none unless a route asks, so unset options cost
nothing per task."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .duplicates import CompletedStore, DuplicateSkipStage, MemoryStore
from .stage import Stage

if TYPE_CHECKING:
    from ..routing import Route
    from ..runtime import Runtime

log = logging.getLogger("kbridge.worker")


def gate_stages(runtime: Runtime) -> list[Stage]:
    """The ordering gate first (it claims the key's turn), then the duplicate filter."""
    routes = list(runtime.routes)
    stages: list[Stage] = []
    if runtime.celery is not None and any(r.ordering for r in routes):
        from ..backends.celery.ordering import OrderingStage

        stages.append(OrderingStage(runtime.celery, runtime.monitor))
    if any(r.skip_duplicates for r in routes):
        stages.append(DuplicateSkipStage(completed_store(runtime), runtime.monitor))
    return stages


def duplicate_store_url(runtime: Runtime) -> str | None:
    """duplicate_store_url, else the Celery broker when it is Redis."""
    if runtime.settings.duplicate_store_url:
        return runtime.settings.duplicate_store_url
    if runtime.celery is not None:
        url = runtime.celery.conf.broker_write_url or runtime.celery.conf.broker_url or ""
        if isinstance(url, str) and url.startswith(("redis://", "rediss://")) and ";" not in url:
            return url
    return None


def completed_store(runtime: Runtime) -> CompletedStore:
    url = duplicate_store_url(runtime)
    if url is not None:
        from .completed_redis import RedisCompletedStore

        return RedisCompletedStore(url, runtime.settings.duplicate_ttl)
    if problems := store_problems(runtime):
        # A listener refuses to serve such a route (serve_problems); a worker that meets one of its tasks
        # anyway retries it with this error rather than run it unchecked, and runs every other route.
        log.error("skip_duplicates has no shared store: %s", "; ".join(problems))
        return UnavailableStore(ConfigError(problems))
    return MemoryStore(runtime.settings.duplicate_ttl)


class UnavailableStore:
    """A store that is not configured: every use raises the configuration error."""

    def __init__(self, error: ConfigError) -> None:
        self.error = error

    def claim(self, group_id: str, topic: str, partition: int, offsets: Sequence[int], owner: str,
              lease: float) -> tuple[set[int], bool]:
        raise self.error

    def record(self, group_id: str, topic: str, partition: int, offsets: Sequence[int], owner: str) -> None:
        raise self.error


def store_problems(runtime: Runtime, routes: Iterable[Route] | None = None) -> list[str]:
    """Routes performed outside the listener need a store every worker shares (routes: these only, else all)."""
    if duplicate_store_url(runtime) is not None:
        return []
    chosen = runtime.routes if routes is None else routes
    celery_routes = [r.shadow for r in chosen if r.skip_duplicates and r.backend != "inline"]
    if not celery_routes:
        return []
    return [f"route(s) {', '.join(map(repr, celery_routes))}: skip_duplicates=True remembers completed offsets in "
            "Redis, shared by every worker, and the Celery broker is not Redis: set "
            "duplicate_store_url='redis://...' in KBridge(...), or drop skip_duplicates"]
