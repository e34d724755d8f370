"""A delivery ledger for the Redis fast path, closing kombu's BRPOP-to-unacked window.

kombu's Redis transport takes a task off its queue (BRPOP) and records it as unacked
in a second command. A task caught between the two when Redis stops, and then dropped
by its worker (cancelled on connection loss, or a crashed worker), is gone from Redis
although Redis had confirmed its enqueue. So:

- the listener writes an entry for each task in the same script as its LPUSH. The entry
  holds Kafka coordinates, not a copy of the task: "<task id> <place code> <offset ranges>",
  ranked by a sequence number that follows the queue's order; a hash maps each place code to
  its route, topic and partition;
- the worker removes the entry when the task ends: performed, dead-lettered or refused
  (it computes the same entry from the task's id and arguments);
- a reaper looks only at entries ranked below the oldest ledgered task still queued (those
  were taken off the queue), and re-queues the ones that are not unacked either for
  `redelivery_after` seconds, rebuilt from the messages Kafka still holds.

The reaper's work is bounded by the tasks in flight, not by the backlog: finding the
queue's oldest ledgered task reads a few items at the queue's tail.

A task can therefore run twice, never zero times: at least once, as promised.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger("kbridge.ledger")

HEADER = "kbridge_ledger"  # task header naming the ledger's queue; the worker clears only such tasks
UNACKED_KEY = "unacked"  # kombu's default; the transport option unacked_key changes it
SUSPECT_GRACE = 2.0  # seconds; well above a worker's batched close interval
TAIL_PROBE = 50  # queue items read from the tail to find the oldest ledgered task still queued
MAX_REQUEUES = 5  # re-queues of one entry by one reaper before it gives up on it, loudly
REAP_LIMIT = 1000  # entries looked at per pass
REQUEUE_BUDGET = 1.0  # seconds of re-queueing (reads from Kafka) per pass

# KEYS: queue, ledger, sequence, places. ARGV: an entry to drop first ("" for none), the number p of places, p
# (code, place) pairs, then n messages, then their n entries. The LPUSH and the ranks are taken in one atomic step,
# so ranks follow the queue's order.
RECORD = """
local p = tonumber(ARGV[2])
local base = 2 + 2 * p
local n = (#ARGV - base) / 2
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
if p > 0 then redis.call('HSET', KEYS[4], unpack(ARGV, 3, base)) end
local first = redis.call('INCRBY', KEYS[3], n) - n
for i = 1, n, 1000 do
  local j = math.min(i + 999, n)
  redis.call('LPUSH', KEYS[1], unpack(ARGV, base + i, base + j))
  local ranked = {}
  for k = i, j do
    ranked[#ranked + 1] = first + k
    ranked[#ranked + 1] = ARGV[base + n + k]
  end
  redis.call('ZADD', KEYS[2], unpack(ranked))
end
return n
"""


def ledger_key(queue: str) -> str:
    return f"kbridge.pending.{queue}"


def sequence_key(queue: str) -> str:
    return f"kbridge.pending_seq.{queue}"


def places_key(queue: str) -> str:
    return f"kbridge.pending_places.{queue}"


def keys(queue: str) -> list[str]:
    return [queue, ledger_key(queue), sequence_key(queue), places_key(queue)]


def place(route_id: str, topic: str, partition: int) -> str:
    return f"{route_id} {topic} {partition}"


@functools.lru_cache(maxsize=4096)
def place_code(place_text: str) -> str:
    """A short stand-in for a place (route, topic, partition) in every entry: 48 bits of its hash, so the
    listener and the worker agree on it without asking Redis."""
    return hashlib.blake2b(place_text.encode(), digest_size=6).hexdigest()


@dataclass(frozen=True)
class Entry:
    """What re-queueing a task needs: its id, its route, and where its messages are in Kafka."""

    task_id: str
    route_id: str
    topic: str
    partition: int
    offsets: tuple[int, ...]

    @classmethod
    def decode(cls, raw: bytes | str, places: dict[str, str]) -> Entry | None:
        """An entry '<task id> <place code> <offset spans>', its place looked up in places (code -> place)."""
        text = raw.decode() if isinstance(raw, bytes) else raw
        parts = text.split(" ")
        where = places.get(parts[1], "").split(" ") if len(parts) == 3 else []
        if len(where) != 3:
            return None
        try:
            offsets: list[int] = []
            for span in parts[2].split(","):
                first, _, last = span.partition("-")
                offsets.extend(range(int(first), int(last or first) + 1))
            return cls(parts[0], where[0], where[1], int(where[2]), tuple(offsets))
        except ValueError:
            return None


def entry(task_id: str, route_id: str, messages: Sequence[Any]) -> str:
    """The entry of a task, from its id and wire messages; the listener and the worker compute the same
    string (names never hold spaces: routes and topics are validated, task ids are ours)."""
    first = messages[0]
    spans: list[str] = []
    start = previous = first["offset"]
    for message in messages[1:]:
        offset = message["offset"]
        if offset != previous + 1:
            spans.append(f"{start}-{previous}" if previous != start else f"{start}")
            start = offset
        previous = offset
    spans.append(f"{start}-{previous}" if previous != start else f"{start}")
    code = place_code(place(route_id, first["topic"], first["partition"]))
    return f"{task_id} {code} {','.join(spans)}"


def entry_of_task(task_id: Any, args: Any) -> str | None:
    """The entry of a task as a worker received it; None when its arguments are not a kbridge task's."""
    try:
        route_id, messages = args
        if isinstance(task_id, str) and isinstance(route_id, str) and messages:
            return entry(task_id, route_id, messages)
    except (TypeError, ValueError, KeyError, IndexError):
        pass
    return None


def entry_of_message(raw: bytes, queue: str) -> str | None:
    """The entry of a queued task message that this queue's ledger tracks, else None."""
    try:
        message = json.loads(raw)
        headers = message["headers"]
        if headers.get(HEADER) != queue:
            return None
        args = json.loads(base64.b64decode(message["body"]))[0]
        return entry_of_task(headers["id"], args)
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def clear(client: redis.Redis, queue: str, entry_text: str) -> None:
    client.zrem(ledger_key(queue), entry_text)


Requeue = Callable[[Entry, str], bool]  # (entry, its text) -> re-queued (False: not now, try again later)


class Reaper:
    """Finds ledger entries whose task vanished, and queues them again."""

    def __init__(self, client: redis.Redis, queue: str, after: float, requeue: Requeue,
                 unacked_key: str = UNACKED_KEY) -> None:
        self.client, self.queue, self.after, self.unacked_key = client, queue, after, unacked_key
        self.requeue = requeue
        # entry -> when it was first found neither queued nor unacked. A finished task is acked before its
        # worker's batched close reaches Redis, and BRPOP comes before the unacked record, so one miss is not
        # proof: only an entry missing for `after` seconds (and at least SUSPECT_GRACE) is re-queued.
        self._suspects: dict[bytes, float] = {}
        self._requeued: dict[str, int] = {}

    def reap(self, now: float | None = None, limit: int = REAP_LIMIT) -> int:
        now = time.time() if now is None else now
        lock = f"kbridge.ledger_lock.{self.queue}"
        if not self.client.set(lock, "1", nx=True, ex=max(5, int(self.after))):
            return 0  # another listener reaps this queue right now
        try:
            taken = self._taken_off_the_queue(limit)
            if taken is None:
                return 0
            pipe = self.client.pipeline(transaction=False)
            for raw in taken:
                pipe.hexists(self.unacked_key, raw.split(b" ", 1)[0])  # our delivery tag is the task id
            alive = pipe.execute() if taken else []
            self._suspects = {raw: self._suspects.get(raw, now) for raw, running in zip(taken, alive, strict=True)
                              if not running}
            wait = max(SUSPECT_GRACE, self.after)
            pushed = 0
            budget = time.monotonic() + REQUEUE_BUDGET
            for raw, since in list(self._suspects.items()):
                if time.monotonic() > budget:
                    break  # the rest on the next pass: this runs on the listener's polling thread
                if now - since >= wait and self._requeue(raw):
                    del self._suspects[raw]
                    pushed += 1
            if pushed:
                log.warning("re-queued %d task(s) of queue %s that left Redis without running "
                            "(lost in the broker's delivery window), rebuilt from Kafka", pushed, self.queue)
            return pushed
        finally:
            self.client.delete(lock)

    def _taken_off_the_queue(self, limit: int) -> list[bytes] | None:
        """Entries ranked below the oldest ledgered task still queued; None when that cannot be told."""
        items: list[bytes] = self.client.lrange(self.queue, -TAIL_PROBE, -1)  # type: ignore[assignment]
        if not items:
            horizon = "+inf"  # nothing queued: every open entry was taken
        else:
            horizon = ""
            for raw in reversed(items):  # the tail is the oldest
                text = entry_of_message(raw, self.queue)
                score = None if text is None else self.client.zscore(ledger_key(self.queue), text)
                if score is not None:
                    horizon = f"({score:.0f}"
                    break
            if not horizon:
                return None  # the tail holds no task of ours: look again once it drained
        return self.client.zrangebyscore(ledger_key(self.queue), "-inf", horizon, start=0,  # type: ignore[return-value]
                                         num=limit)

    def _requeue(self, raw: bytes) -> bool:
        text = raw.decode()
        parts = text.split(" ")
        known = self.client.hget(places_key(self.queue), parts[1]) if len(parts) == 3 else None
        parsed = Entry.decode(text, {parts[1]: known.decode()} if isinstance(known, bytes) else {})
        tries = self._requeued.get(text, 0)
        if parsed is None or tries >= MAX_REQUEUES:
            log.error("dropping ledger entry %r of queue %s: %s", text[:200], self.queue,
                      "unreadable" if parsed is None else
                      f"re-queued {tries} times and lost again; check the workers of this queue")
            self.client.zrem(ledger_key(self.queue), text)
            return False
        try:
            done = self.requeue(parsed, text)
        except Exception as exc:
            log.warning("could not re-queue %s-%d@%s of queue %s yet: %s: %s", parsed.topic, parsed.partition,
                        parsed.offsets[0], self.queue, type(exc).__name__, exc)
            return False
        if done:
            if len(self._requeued) > REAP_LIMIT:
                self._requeued.clear()  # a count only guards against a loop; it need not outlive one
            self._requeued[text] = tries + 1
        return done


class Closer:
    """Closes ledger entries for a worker process in batches, off the task's own time.

    One round trip per task would cost a trivial task as much as its own work, so
    finished entries are buffered and flushed by a daemon thread every `interval`
    seconds (and at process shutdown). An entry whose close is lost to a crash is
    only re-queued by the reaper: a duplicate, never a loss.
    """

    def __init__(self, url: str, interval: float = 0.2) -> None:
        self.url, self.interval = url, interval
        self._pending: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None

    def close_entry(self, queue: str, entry_text: str) -> None:
        with self._lock:
            self._pending.setdefault(queue, []).append(entry_text)
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
            for queue, entries in pending.items():
                pipe.zrem(ledger_key(queue), *entries)
            pipe.execute()
        except Exception as exc:
            with self._lock:  # keep them for the next flush: Redis may only be restarting
                for queue, entries in pending.items():
                    self._pending.setdefault(queue, [])[:0] = entries
            log.warning("could not close %d ledger entr(ies) yet: %s; retrying",
                        sum(map(len, pending.values())), exc)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()
