"""Benchmark: ordering="key" against unordered on 64 keys, and what skip_duplicates costs per message.

One real worker (prefork -c 4) drains each side in turn, as in the per-message benchmark:
a side's queue is filled through kbridge's own enqueue path while the worker does not
consume it (so an ordered side registers its offsets as the listener would), then the
worker consumes it until every task was performed. Sides rotate over rounds and each
side's rate is the median of its rounds.

- ordered vs unordered: the same consumer (0-4 ms of waiting per message), 64 keys spread
  over the partitions. The backlog is deep (every key's messages are queued at once), so
  most ordered tasks meet a running predecessor and are parked, then released: the worst
  case for the gate, and the common one after an outage.
- skip_duplicates vs plain: the trivial per-message body; the difference of the two
  per-task times is the stage's cost (two Lua calls on Redis per task). That body makes one
  Redis round trip itself, so the stage triples a task's round trips: 0.5 is the floor
  below which something costs more than those two calls.
- in process: the stages alone, one runner in the bench process with and without them and a
  perform() that does nothing, so the cost per message is not lost in a worker's noise.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

from kbridge import BaseConsumer, KBridge
from kbridge.backends.celery.ordering import OrderingStage
from kbridge.interchange import to_wire
from kbridge.params import Params, ParamsBatch
from kbridge.perform import Job, PerformRunner, Retry, build_runner
from kbridge.perform.completed_redis import RedisCompletedStore
from kbridge.perform.duplicates import DuplicateSkipStage
from kbridge.routing import Route
from kbridge.runtime import Runtime

from .app import build
from .config import done_key
from .harness import Bench, payload, start_worker
from .per_message import drain
from .results import Result, Target

NAME = "ordering"
KEYS = 64
ROUNDS = 4
PER_ROUND = {"unordered": 1280, "ordered": 1280, "plain": 1500, "skip_duplicates": 1500}

Filler = Callable[[int, int], None]


def _filler(kb: KBridge, route: Route, parts: int) -> Filler:
    backend = Runtime.of(kb).backend(route.backend)

    def fill(start: int, n: int) -> None:
        """Message i has key i % 64; a key always lands on the same partition, offsets grow per partition."""
        now_ms = time.time() * 1000.0
        messages = []
        for i in range(start, start + n):
            k = i % KEYS
            messages.append(Params(topic=route.name, partition=k % parts, offset=i, key=f"key-{k}".encode(),
                                   raw_payload=payload(i), timestamp_ms=now_ms, receive_time_ms=now_ms,
                                   deserializer=route.deserializer))
        backend.enqueue(route, messages)
    return fill


def run(bench: Bench) -> list[Result]:
    kb, celery_app = build(bench.config)
    routes = {name: next(iter(kb.routes.select([group])[0].topics.values()))
              for name, group in (("unordered", "unordered"), ("ordered", "ordered"), ("plain", "permsg"),
                                  ("skip_duplicates", "dedup"))}
    parts = bench.sizes.partitions
    sides = {name: (r.queue or "", done_key(r.name), _filler(kb, r, parts)) for name, r in routes.items()}
    node = f"{NAME}-{bench.config.run}@{socket.gethostname()}"
    worker = start_worker(bench, [bench.config.queue(f"{NAME}-idle")], name=f"{NAME}-worker", concurrency=4,
                          node=node)
    names = list(sides)
    rounds: list[dict[str, float]] = []
    offsets = dict.fromkeys(names, 0)
    try:
        for r in range(ROUNDS):
            this_round: dict[str, float] = {}
            for side in names[r % len(names):] + names[:r % len(names)]:
                queue, key, fill = sides[side]
                n = PER_ROUND[side]
                fill(offsets[side], n)
                offsets[side] += n
                this_round[side] = drain(bench, celery_app, node, worker, queue, key, n, side)
            rounds.append(this_round)
    finally:
        worker.stop()
        bench.redis.delete(*(queue for queue, _, _ in sides.values()))

    rates = {side: statistics.median(r[side] for r in rounds) for side in sides}
    stages = in_process(bench)
    cost_us = (1 / rates["skip_duplicates"] - 1 / rates["plain"]) * 1e6
    common = {"rounds": rounds, "median_rates": {k: round(v, 1) for k, v in rates.items()}, "worker_concurrency": 4,
              "worker_log": worker.log_path}
    return [
        Result("ordering=key vs unordered, 64 keys", "msg/s", value=rates["ordered"], baseline=rates["unordered"],
               baseline_name="unordered", target=Target(">=", 0.5),
               details={**common, "messages_per_round": PER_ROUND["ordered"], "keys": KEYS}),
        Result("skip_duplicates vs plain", "msg/s", value=rates["skip_duplicates"], baseline=rates["plain"],
               baseline_name="plain", target=Target(">=", 0.5),
               details={**common, "messages_per_round": PER_ROUND["plain"],
                        "cost_per_message_us": round(cost_us, 1)}),
        *stages,
    ]


class _Request:
    """What the gate reads of a Celery task's request."""

    def __init__(self, task_id: str, args: list[Any], queue: str) -> None:
        self.id, self.args, self.retries, self.delivery_info = task_id, args, 0, {"routing_key": queue}


class _Trivial(BaseConsumer):
    def perform(self) -> None:
        return None


def in_process(bench: Bench, n: int = 3000) -> list[Result]:
    """The stages' own cost, per message, on the bench Redis: one runner in this process, with and without them,
    a perform() that does nothing, no waiting (each message settles before the next)."""
    kb, celery_app = build(bench.config)
    stamp = f"{bench.config.run}-inproc"
    route_plain = kb.topic(f"{stamp}-plain", consumer=_Trivial, queue=bench.config.queue(f"{stamp}-plain"))
    route_dedup = kb.topic(f"{stamp}-dedup", consumer=_Trivial, skip_duplicates=True)
    route_order = kb.topic(f"{stamp}-order", consumer=_Trivial, ordering="key")
    sink = Runtime.of(kb).dead_letters
    plain = build_runner(sink, enforce_timeout=False)
    dedup = build_runner(sink, enforce_timeout=False, extra=[
        DuplicateSkipStage(RedisCompletedStore(bench.redis_service.url, 3600))])
    order = build_runner(sink, enforce_timeout=False, extra=[OrderingStage(celery_app)])

    def rate(runner: PerformRunner, route: Route, delivery: bool) -> float:
        started = time.perf_counter()
        for i in range(n):
            params = Params(topic=route.name, partition=0, offset=i, key=f"key-{i % KEYS}".encode(),
                            raw_payload=b"{}")
            request = _Request(f"t{i}", [route.route_id, [to_wire(params)]], "q") if delivery else None
            runner.run(Job(route, ParamsBatch([params]), delivery=request), _NoRetry())
        return n / (time.perf_counter() - started)

    base = statistics.median(rate(plain, route_plain, False) for _ in range(3))
    with_dedup = rate(dedup, route_dedup, False)
    with_order = rate(order, route_order, True)
    return [
        Result("skip_duplicates stage, in process", "msg/s", value=with_dedup, baseline=base, baseline_name="no stage",
               details={"messages": n, "cost_per_message_us": round((1 / with_dedup - 1 / base) * 1e6, 1)}),
        Result("ordering gate, in process, no waiting", "msg/s", value=with_order, baseline=base,
               baseline_name="no stage",
               details={"messages": n, "cost_per_message_us": round((1 / with_order - 1 / base) * 1e6, 1)}),
    ]


class _NoRetry:
    def perform_again(self, job: Job, retry: Retry) -> None:
        raise RuntimeError(f"unexpected retry of {job}: {retry.error}")

    def dead_letter_again(self, job: Job, pending: Any) -> None:
        raise RuntimeError(f"unexpected dead letter of {job}")
