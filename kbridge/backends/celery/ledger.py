"""A delivery ledger for the Redis fast path, closing kombu's BRPOP-to-unacked window.

kombu's Redis transport takes a task off its queue (BRPOP) and records it as unacked
in a second command. A task caught between the two when Redis stops, and then dropped
by its worker (cancelled on connection loss, or a crashed worker), is gone from Redis
although Redis had confirmed its enqueue. So:

- the listener writes each task to the ledger in the same MULTI/EXEC as its LPUSH;
- the worker clears the entry when the task ends: performed, dead-lettered or refused;
- a reaper re-pushes entries open longer than `redelivery_after` seconds that are
  neither in the queue nor unacked (running, prefetched or waiting for a retry).

A task can therefore run twice, never zero times: at least once, as promised.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

log = logging.getLogger("kbridge.ledger")

HEADER = "kbridge_ledger"  # task header naming the ledger's queue; the worker clears only such tasks
UNACKED_KEY = "unacked"  # kombu's default; the transport option unacked_key changes it
SCAN_CHUNK = 500
SUSPECT_GRACE = 2.0  # seconds; well above a worker's batched close interval


def ledger_key(queue: str) -> str:
    return f"kbridge.ledger.{queue}"


def index_key(queue: str) -> str:
    return f"kbridge.ledger_index.{queue}"


def record_many(pipe: Any, queue: str, entries: dict[str, str], now: float) -> None:
    """Open one entry per task (task id -> its encoded message), in two commands."""
    pipe.hset(ledger_key(queue), mapping=entries)
    pipe.zadd(index_key(queue), dict.fromkeys(entries, now))


def clear(client: redis.Redis, queue: str, task_id: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.hdel(ledger_key(queue), task_id)
    pipe.zrem(index_key(queue), task_id)
    pipe.execute()


class Reaper:
    """Finds ledger entries whose task vanished, and queues them again."""

    def __init__(self, client: redis.Redis, queue: str, after: float, unacked_key: str = UNACKED_KEY) -> None:
        self.client, self.queue, self.after, self.unacked_key = client, queue, after, unacked_key
        # task id -> when it was first found missing. A finished task is acked before its
        # worker's batched close reaches Redis, so one miss is not proof: only a task still
        # missing a while later, on another pass, is re-queued.
        self._suspects: dict[str, float] = {}

    def reap(self, now: float | None = None, limit: int = 200) -> int:
        now = time.time() if now is None else now
        lock = f"kbridge.ledger_lock.{self.queue}"
        if not self.client.set(lock, "1", nx=True, ex=max(5, int(self.after))):
            return 0  # another listener reaps this queue right now
        try:
            stale: list[Any] = self.client.zrangebyscore(index_key(self.queue), 0, now - self.after, start=0, num=limit)
            if not stale:
                return 0
            unacked = self._unacked_ids()
            pushed = 0
            for raw_id in stale:
                task_id = raw_id.decode()
                message: Any = self.client.hget(ledger_key(self.queue), task_id)
                if message is None:  # cleared meanwhile
                    self._suspects.pop(task_id, None)
                    self.client.zrem(index_key(self.queue), task_id)
                elif task_id in unacked or self._queued(task_id, message):
                    self._suspects.pop(task_id, None)
                    self.client.zadd(index_key(self.queue), {task_id: now})  # alive: look again later
                elif now - self._suspects.setdefault(task_id, now) < SUSPECT_GRACE:
                    continue
                else:
                    del self._suspects[task_id]
                    pipe = self.client.pipeline(transaction=True)
                    pipe.lpush(self.queue, message)
                    pipe.zadd(index_key(self.queue), {task_id: now})
                    pipe.execute()
                    pushed += 1
            if pushed:
                log.warning("re-queued %d task(s) of queue %s that left Redis without running "
                            "(lost in the broker's delivery window)", pushed, self.queue)
            return pushed
        finally:
            self.client.delete(lock)

    def _unacked_ids(self) -> set[str]:
        ids = set()
        for _, value in self.client.hscan_iter(self.unacked_key, count=SCAN_CHUNK):
            try:
                ids.add(json.loads(value)[0]["headers"]["id"])
            except (ValueError, KeyError, IndexError, TypeError):
                continue
        return ids

    def _queued(self, task_id: str, message: bytes) -> bool:
        """Still waiting in the queue: the same message, or a retry of it (same task id)."""
        if self.client.lpos(self.queue, message, rank=-1) is not None:  # type: ignore[arg-type]
            return True
        needle = f'"id": "{task_id}"'.encode()
        length = int(self.client.llen(self.queue))
        for end in range(length, 0, -SCAN_CHUNK):  # oldest first: they sit at the tail
            for item in self.client.lrange(self.queue, max(0, end - SCAN_CHUNK), end - 1):
                if needle in item:
                    return True
        return False


class Closer:
    """Closes ledger entries for a worker process in batches, off the task's own time.

    One round trip per task would cost a trivial task as much as its own work, so
    finished task ids are buffered and flushed by a daemon thread every `interval`
    seconds (and at process shutdown). An entry whose close is lost to a crash is
    only re-queued by the reaper: a duplicate, never a loss.
    """

    def __init__(self, url: str, interval: float = 0.2) -> None:
        self.url, self.interval = url, interval
        self._pending: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None

    def close_entry(self, queue: str, task_id: str) -> None:
        with self._lock:
            self._pending.setdefault(queue, []).append(task_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kbridge-ledger", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            if self._client is None:
                self._client = redis.Redis.from_url(self.url)
            pipe = self._client.pipeline(transaction=False)
            for queue, ids in pending.items():
                pipe.hdel(ledger_key(queue), *ids)
                pipe.zrem(index_key(queue), *ids)
            pipe.execute()
        except Exception as exc:
            with self._lock:  # keep them for the next flush: Redis may only be restarting
                for queue, ids in pending.items():
                    self._pending.setdefault(queue, [])[:0] = ids
            log.warning("could not close %d ledger entr(ies) yet: %s; retrying",
                        sum(map(len, pending.values())), exc)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()
