"""ordering="partition" or "key" on a celery route: tasks of one partition (or one message key) run one after
another, in offset order, on any number of workers; different keys run in parallel.

The listener never waits. It registers each message's offset as pending for its key in
the same MULTI/EXEC that pushes the tasks (so a task in the queue is always registered),
and moves on. The worker gates each task before perform():

- its key already completed an offset at or past the task's (a redelivered copy):
  settled as Skipped("duplicate"): running it would break the order;
- an earlier offset of its key is still pending, or another delivery holds the key's
  claim: the task is parked (its message stored next to the key's pending set) and
  acked; it does not run and does not spend a retry;
- else it claims the key (owner: the Celery task id) and runs.

When a task settles (performed or dead-lettered; a Retry keeps it pending, so its
successors keep waiting), one Lua script marks the key done up to its last offset,
drops the claim and pushes the parked tasks that may now run back onto their queue, with
ledger entries. That is atomic with the broker because the state lives in the broker's
own Redis: ordering needs a Redis broker and the Redis fast path.

A worker killed mid-task: acks_late and reject_on_worker_lost requeue the same message,
whose task id owns the claim, so it runs again first; successors stay parked.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from celery.exceptions import Reject

from ...params import Params, ParamsBatch
from ...perform.job import DeadLettered, Job, Outcome, Performed, Skipped
from ...perform.stage import Stage
from . import ledger, redis_pipeline
from .task import HARD_LIMIT_GRACE, TASK_NAME

if TYPE_CHECKING:
    from celery import Celery

    from ...instrumentation import Monitor
    from ...routing.route import Route

log = logging.getLogger("kbridge.ordering")

STATE_TTL = 7 * 24 * 3600  # seconds a key's done mark and pending set outlive their last write
SETTLE_RETRIES = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # seconds between tries to settle while Redis is unreachable
CLAIM_SLACK = 60.0  # seconds a claim outlives the route's hard time limit and its longest retry backoff

_REGISTER = """
local base, ttl = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local k, o = ARGV[i], tonumber(ARGV[i + 1])
  local d = redis.call('HGET', base .. '.done', k)
  if not d or tonumber(d) < o then
    local pending = base .. '.pending.' .. k
    redis.call('ZADD', pending, 'NX', o, ARGV[i + 1])
    redis.call('EXPIRE', pending, ttl)
  end
end
return 1
"""

_GATE = """
local base, k, first, last, owner, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local d = redis.call('HGET', base .. '.done', k)
if d and tonumber(d) >= last then return {'done', d} end
local head = redis.call('ZRANGE', base .. '.pending.' .. k, 0, 0, 'WITHSCORES')
local claim = base .. '.run.' .. k
local holder = redis.call('GET', claim)
if (head[2] and tonumber(head[2]) < first) or (holder and holder ~= owner) then
  if ARGV[8] == '' then return {'wait', d or ''} end
  redis.call('ZADD', base .. '.parked.' .. k, first, ARGV[7])
  redis.call('HSET', base .. '.parked_msg.' .. k, ARGV[7], ARGV[8])
  redis.call('EXPIRE', base .. '.parked.' .. k, ARGV[9])
  redis.call('EXPIRE', base .. '.parked_msg.' .. k, ARGV[9])
  return {'parked', d or ''}
end
redis.call('SET', claim, owner, 'PX', lease)
return {'run', d or ''}
"""

_SETTLE = """
local base, k, last, owner, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local dk = base .. '.done'
local d = redis.call('HGET', dk, k)
if not d or tonumber(d) < last then redis.call('HSET', dk, k, ARGV[3]) end
redis.call('EXPIRE', dk, ttl)
local pending = base .. '.pending.' .. k
redis.call('ZREMRANGEBYSCORE', pending, '-inf', last)
local claim = base .. '.run.' .. k
if redis.call('GET', claim) == owner then redis.call('DEL', claim) end
local head = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
local parked, messages = base .. '.parked.' .. k, base .. '.parked_msg.' .. k
local ids = redis.call('ZRANGEBYSCORE', parked, '-inf', head[2] or '+inf')
for _, id in ipairs(ids) do
  local v = redis.call('HGET', messages, id)
  if v then
    local cut = string.find(v, '\\n', 1, true)
    local cut2 = string.find(v, '\\n', cut + 1, true)
    local queue, entry, msg = string.sub(v, 1, cut - 1), string.sub(v, cut + 1, cut2 - 1), string.sub(v, cut2 + 1)
    redis.call('RPUSH', queue, msg)
    -- its ledger entry, ranked 0: below every queued task, so the reaper sees it as taken once it is, and
    -- checks that it then runs
    redis.call('ZADD', '@LEDGER_PREFIX@' .. queue, 0, entry)
    redis.call('HDEL', messages, id)
  end
  redis.call('ZREM', parked, id)
end
return #ids
""".replace("@LEDGER_PREFIX@", ledger.ledger_key(""))


def broker_problems(celery_app: Celery, routes: Sequence[Route]) -> list[str]:
    """Ordered routes need the Redis fast path: the gate's state lives in the broker's Redis, so a settle and the
    release of the tasks it unblocks are one atomic step."""
    problems = []
    for route in routes:
        queue = route.queue or celery_app.conf.task_default_queue
        if route.ordering and not redis_pipeline.supports(celery_app, queue):
            problems.append(
                f"route {route.shadow!r}: ordering={route.ordering!r} needs a plain redis:// (or rediss://) Celery "
                f"broker reaching queue {queue!r} by a direct route (no task_routes, broker_use_ssl or "
                "global_keyprefix): the order is kept in the broker's Redis. Use a Redis broker for ordered "
                "topics, or drop ordering"
            )
    return problems


def base(route: Route, topic: str, partition: int) -> str:
    """The state of one partition of one topic: a pattern route's topics each keep their own order."""
    return f"kbridge.order.{route.group_id}.{topic}.{partition}"


def order_key(route: Route, params: Params) -> str:
    """The unit of order: the partition, or a digest of the message key (a null key is one key of its own).

    A digest collision only makes two keys share an order: slower, never out of order."""
    if route.ordering == "partition":
        return "p"
    if params.key is None:
        return "null"
    return hashlib.blake2b(params.key, digest_size=16).hexdigest()


def registration(route: Route, messages: Sequence[Params]) -> list[list[Any]]:
    """The REGISTER script's arguments, one list per partition, for the listener's enqueue transaction."""
    by_partition: dict[tuple[str, int], list[Any]] = {}
    for m in messages:
        by_partition.setdefault((m.topic, m.partition), []).extend((order_key(route, m), m.offset))
    return [[base(route, topic, p), STATE_TTL, *args] for (topic, p), args in by_partition.items()]


class Registrar:
    """The listener's half: registers an ordered route's offsets inside its enqueue transaction."""

    def __init__(self, client: redis.Redis) -> None:
        self.script: Any = client.register_script(_REGISTER)

    def adder(self, route: Route, messages: Sequence[Params]) -> Callable[[Any], None]:
        argsets = registration(route, messages)

        def add(pipe: Any) -> None:
            for args in argsets:
                self.script(args=args, client=pipe)
        return add


class OrderingStage(Stage):
    """The worker's gate. before() claims, parks or skips; after() settles and releases the parked successors."""

    def __init__(self, celery_app: Celery, monitor: Monitor | None = None) -> None:
        self.celery_app = celery_app
        self.monitor = monitor
        self._publisher: redis_pipeline.RedisPipelinePublisher | None = None
        self._gate: Any = None
        self._settle: Any = None

    def _scripts(self) -> redis_pipeline.RedisPipelinePublisher:
        if self._publisher is None:
            self._publisher = redis_pipeline.RedisPipelinePublisher(self.celery_app, redelivery_after=60.0)
            self._gate = self._publisher.client.register_script(_GATE)
            self._settle = self._publisher.client.register_script(_SETTLE)
        return self._publisher

    def before(self, job: Job) -> Outcome | None:
        route, request = job.route, job.delivery
        if not route.ordering or request is None:
            return None
        try:
            return self._gate_job(job, route, request)
        except redis.RedisError as exc:  # never run unchecked, never drop: back to the queue
            log.error("%s: cannot reach the ordering state in Redis (%s); requeueing it", job, exc)
            raise Reject(f"ordering state unreachable: {exc}", requeue=True) from exc

    def _gate_job(self, job: Job, route: Route, request: Any) -> Outcome | None:
        publisher = self._scripts()
        first, last = job.batch[0], job.batch[-1]
        key = order_key(route, first)
        lease = int((route.timeout + HARD_LIMIT_GRACE + route.retry_backoff_max + CLAIM_SLACK) * 1000)
        args: list[Any] = [base(route, first.topic, first.partition), key, first.offset, last.offset, request.id,
                           lease, "", "", STATE_TTL]
        verdict, done = self._gate(args=args)
        if verdict in (b"wait", "wait"):
            # Blocked: only now build the message to park, and check again in the same step as parking it.
            args[6] = parked_id = publisher.next_id()
            queue = (getattr(request, "delivery_info", None) or {}).get("routing_key") or (
                route.queue or self.celery_app.conf.task_default_queue)
            task_args = list(request.args)
            message = publisher.message(parked_id, TASK_NAME, queue, route.shadow, task_args,
                                        route.timeout + HARD_LIMIT_GRACE, route.timeout,
                                        {"retries": request.retries or 0})  # parking spends no attempt
            # What the release pushes: the queue, the ledger entry it then gets, and the message.
            args[7] = f"{queue}\n{ledger.entry(parked_id, task_args[0], task_args[1])}\n{message}"
            verdict, done = self._gate(args=args)
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        if verdict == "done":
            self._emit("duplicate_skipped", job, len(job.batch))
            log.info("%s: its key already completed offset %s; skipped as a duplicate", job, int(done))
            return Skipped("duplicate", job.attempt - 1)
        if verdict == "parked":
            self._emit("ordering.parked", job, len(job.batch))
            return Skipped("parked", job.attempt - 1)
        if done not in (b"", ""):  # a batch reaching past what its partition completed: run only the rest
            passed = int(done)
            job.batch = ParamsBatch([p for p in job.batch if p.offset > passed])
        return None

    def after(self, job: Job, outcome: Outcome) -> None:
        route, request = job.route, job.delivery
        if not route.ordering or request is None:
            return
        if isinstance(outcome, Skipped) and outcome.reason == "parked":
            return
        if not isinstance(outcome, (Performed, DeadLettered, Skipped)):
            return
        self._scripts()
        first, last = job.batch[0], job.batch[-1]
        args = [base(route, first.topic, first.partition), order_key(route, first), last.offset, request.id,
                STATE_TTL]
        for wait in (*SETTLE_RETRIES, None):
            try:
                released = self._settle(args=[*args, time.time()])
                break
            except redis.RedisError as exc:
                if wait is None:
                    # Unsettled, the key would stay blocked: requeue the task. Its redelivery (same task id) owns
                    # the claim and runs again, then settles; a duplicate run rather than a stuck key.
                    log.error("%s: could not release its key in Redis (%s); requeueing it", job, exc)
                    raise Reject(f"ordering state unreachable: {exc}", requeue=True) from exc
                time.sleep(wait)
        if released:
            self._emit("ordering.released", job, int(released))

    def _emit(self, event: str, job: Job, count: int) -> None:
        if self.monitor is not None and self.monitor.listens(event):
            first = job.batch[0]
            self.monitor.instrument(event, route=job.route.route_id, group_id=job.route.group_id,
                                    topic=first.topic, partition=first.partition, offset=first.offset,
                                    messages=count)
