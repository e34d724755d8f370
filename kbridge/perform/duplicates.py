"""skip_duplicates=True: perform() runs at most once per (consumer group, topic, partition, offset) that completed.

At least once means a message can be delivered again: a listener killed before it
committed re-enqueues what it had handed over, a rebalance hands a partition to a
listener that starts from the last commit, the ledger re-queues a task it believes
lost. This stage remembers which offsets completed (performed, or dead-lettered) and
settles a redelivered copy as Skipped("duplicate") without running perform().

Per message, not per task: a batch (or a pack) whose boundaries differ from the first
delivery's runs only the messages that never completed.

Two copies delivered at once are kept apart by a claim per offset, owned by the
delivery's id (a Celery task id survives redelivery and retries, so the same task
reclaims after a kill -9; a copy with another id waits until the first settles).

The window that remains: perform() returned and the process died before record() wrote
its offsets; the copy then runs again. kbridge narrows it to one Redis round trip.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..params import ParamsBatch
from .job import DeadLettered, Job, Outcome, Performed, Retry, Skipped
from .retry import backoff
from .stage import Stage

if TYPE_CHECKING:
    from ..instrumentation import Monitor

log = logging.getLogger("kbridge.perform")

DEFAULT_TTL = 7 * 24 * 3600.0  # seconds a completed offset is remembered (the duplicate_ttl setting)
BUSY_BACKOFF = 0.2  # first wait of a copy whose twin is running now, doubling up to BUSY_BACKOFF_MAX
BUSY_BACKOFF_MAX = 5.0
CLAIM_SLACK = 60.0  # seconds a claim outlives the route's hard time limit and longest retry backoff


class DuplicateBusy(Exception):
    """Another delivery of these offsets is running now: this copy waits for it to settle."""


class CompletedStore(Protocol):
    def claim(self, group_id: str, topic: str, partition: int, offsets: Sequence[int], owner: str,
              lease: float) -> tuple[set[int], bool]:
        """(offsets already completed, whether another owner holds a claim on one of the others). When none is
        held by another, the others are claimed for owner for lease seconds, in the same atomic step."""

    def record(self, group_id: str, topic: str, partition: int, offsets: Sequence[int], owner: str) -> None:
        """Remember offsets as completed (for the TTL) and drop owner's claims on them, atomically."""


class MemoryStore:
    """One process's memory: for TestClient, and inline routes with no Redis to share (see docs/delivery.md)."""

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self._done: dict[tuple[str, str, int, int], float] = {}
        self._claims: dict[tuple[str, str, int, int], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def claim(self, group_id: str, topic: str, partition: int, offsets: Sequence[int], owner: str,
              lease: float) -> tuple[set[int], bool]:
        now = time.monotonic()
        with self._lock:
            done = {o for o in offsets if self._done.get((group_id, topic, partition, o), 0.0) > now}
            rest = [(group_id, topic, partition, o) for o in offsets if o not in done]
            if any(c[0] != owner and c[1] > now for k in rest if (c := self._claims.get(k)) is not None):
                return done, True
            for k in rest:
                self._claims[k] = (owner, now + lease)
            return done, False

    def record(self, group_id: str, topic: str, partition: int, offsets: Sequence[int], owner: str) -> None:
        until = time.monotonic() + self.ttl
        with self._lock:
            for o in offsets:
                key = (group_id, topic, partition, o)
                self._done[key] = until
                if self._claims.get(key, ("",))[0] == owner:
                    del self._claims[key]


class DuplicateSkipStage(Stage):
    """Placed after the ordering gate, which claims the order first; it may narrow job.batch to the offsets
    that never completed."""

    def __init__(self, store: CompletedStore, monitor: Monitor | None = None) -> None:
        self.store = store
        self.monitor = monitor

    def before(self, job: Job) -> Outcome | None:
        route = job.route
        if not route.skip_duplicates:
            return None
        first = job.batch[0]
        offsets = [p.offset for p in job.batch]
        lease = route.timeout + route.retry_backoff_max + CLAIM_SLACK
        try:
            done, busy = self.store.claim(route.group_id, first.topic, first.partition, offsets, _owner(job), lease)
        except Exception as exc:  # the store is unreachable: try again later, never run unchecked or drop it
            countdown = backoff(BUSY_BACKOFF, BUSY_BACKOFF_MAX, min(job.attempt - 1, 8))
            log.warning("%s: cannot check for duplicates (%s: %s); trying again in %.1fs", job, type(exc).__name__,
                        exc, countdown)
            return Retry(exc, countdown)
        if busy:
            countdown = backoff(BUSY_BACKOFF, BUSY_BACKOFF_MAX, min(job.attempt - 1, 8))
            log.info("%s: another delivery of it is running; this copy waits %.1fs", job, countdown)
            return Retry(DuplicateBusy(f"another delivery of {job} is running"), countdown)
        if not done:
            return None
        self._skipped(job, sorted(done))
        if len(done) == len(offsets):
            return Skipped("duplicate", job.attempt - 1)
        job.batch = ParamsBatch([p for p in job.batch if p.offset not in done])
        return None

    def after(self, job: Job, outcome: Outcome) -> None:
        if not job.route.skip_duplicates or not isinstance(outcome, (Performed, DeadLettered)):
            return
        first = job.batch[0]
        try:
            self.store.record(job.route.group_id, first.topic, first.partition, [p.offset for p in job.batch],
                              _owner(job))
        except Exception as exc:
            log.error("%s completed but could not be recorded as done (%s: %s); a redelivered copy would run "
                      "again", job, type(exc).__name__, exc)

    def _skipped(self, job: Job, offsets: list[int]) -> None:
        log.info("%s: skipped %d duplicate(s) of completed message(s), offsets %s", job, len(offsets),
                 _span(offsets))
        if self.monitor is not None and self.monitor.listens("duplicate_skipped"):
            first = job.batch[0]
            self.monitor.instrument("duplicate_skipped", route=job.route.route_id, group_id=job.route.group_id,
                                    topic=first.topic, partition=first.partition, offset=offsets[0],
                                    messages=len(offsets))


_HOST = socket.gethostname()


def _owner(job: Job) -> str:
    """The delivery's id: the Celery task id (kept across redelivery and retries). Inline, this process: a
    listener runs one partition's messages one after another, so only another process is a rival."""
    owner = getattr(job.delivery, "id", None)
    if isinstance(owner, str) and owner:
        return owner
    return f"{_HOST}:{os.getpid()}"


def _span(offsets: list[int]) -> str:
    return str(offsets[0]) if len(offsets) == 1 else f"{offsets[0]}..{offsets[-1]}"


def skip_duplicates_problems(where: str, opts: dict[str, Any]) -> list[str]:
    if not isinstance(opts["skip_duplicates"], bool):
        return [f"{where}: skip_duplicates must be True or False, got {opts['skip_duplicates']!r}"]
    return []
