"""Benchmark 4: what a worker pays per kbridge task, against a bare Celery task with the same body.

One real worker (prefork -c 2) drains each side in turn: a side's queue is filled while
the worker does not consume it, then the worker is told to consume it (Celery's
add_consumer control command) until every task was performed, and to stop again. The
rate is taken between the first and the last perform. The bodies are identical (one
pipelined Redis INCRBY + RPUSH); what differs is kbridge's task: rebuilding Params from
the wire, the route lookup, the consumer instance, glass, and the delivery options
acks_late and reject_on_worker_lost, which the bare_acks_late side has too, so that
the two costs can be told apart.

The packed side enqueues the same messages to a pack=50 route: perform() still runs once per
message (the same body), 50 to a task; it is reported as its own result against the bare task.

Drain rates swing by ±15% (at worst ±50%) between runs seconds apart on this shared
machine, so the sides take turns over several short rounds, in rotating order (each
side drains first, second and third equally often), and each side's rate is the
median of its rounds.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable

from celery import Celery

from kbridge import KBridge
from kbridge.params import Params
from kbridge.routing import Route
from kbridge.runtime import Runtime
from kbridge.testing.processes import Process

from .app import BARE_ACKS_LATE_TASK, BARE_TASK, build
from .config import done_key
from .harness import Bench, payload, start_worker, wait_for_count
from .results import Result, Target

NAME = "permsg"
PACK_GROUP = "permsg_pack"
ROUNDS = 6
BARE_SIDES = {"bare": BARE_TASK, "bare_acks_late": BARE_ACKS_LATE_TASK}

Filler = Callable[[int, int], None]


def _kbridge_filler(kb: KBridge, route: Route, parts: int) -> Filler:
    backend = Runtime.of(kb).backend(route.backend)

    def fill(start: int, n: int) -> None:
        """kbridge's own enqueue path (the listener's), one task per message."""
        now_ms = time.time() * 1000.0
        messages = [
            Params(topic=route.name, partition=i % parts, offset=i // parts, raw_payload=payload(i),
                   timestamp_ms=now_ms, receive_time_ms=now_ms, deserializer=route.deserializer)
            for i in range(start, start + n)
        ]
        for partition in range(parts):  # as the listener does: one partition per call
            backend.enqueue(route, [m for m in messages if m.partition == partition])
    return fill


def _bare_filler(celery_app: Celery, task_name: str, queue: str) -> Filler:
    def fill(start: int, n: int) -> None:
        """What a Celery user would do: the payload as the task argument."""
        task = celery_app.tasks[task_name]
        with celery_app.producer_or_acquire() as producer:
            for i in range(start, start + n):
                task.apply_async(args=[done_key(queue), payload(i).decode()], queue=queue, producer=producer)
    return fill


def _control(celery_app: Celery, command: str, queue: str, node: str) -> None:
    replies = getattr(celery_app.control, command)(queue, destination=[node], reply=True, timeout=10)
    if not replies:
        raise RuntimeError(f"worker {node} did not answer {command}({queue!r})")


def drain(bench: Bench, celery_app: Celery, node: str, worker: Process, queue: str, key: str, n: int,
          side: str) -> float:
    """Let the worker consume queue until n performs were recorded under key; the rate between first and last."""
    _control(celery_app, "add_consumer", queue, node)
    wait_for_count(bench, key, n, timeout=max(600, n / 5), what=f"{side} tasks performed", alive=[worker])
    _control(celery_app, "cancel_consumer", queue, node)
    times = [float(t) for t in bench.redis.lrange(f"{key}:times", 0, -1)]
    bench.redis.delete(f"{key}:count", f"{key}:times")
    return round((len(times) - 1) / (max(times) - min(times)), 1)


def run(bench: Bench) -> list[Result]:
    per_round = max(2, bench.sizes.worker_messages // ROUNDS)
    kb, celery_app = build(bench.config)
    route = next(iter(kb.routes.select([NAME])[0].topics.values()))
    sides: dict[str, tuple[str, str, Filler]] = {
        "kbridge": (route.queue or "", done_key(route.name), _kbridge_filler(kb, route, bench.sizes.partitions)),
    }
    if PACK_GROUP in kb.routes.groups:  # pack=50: per-message performs, 50 to a task
        pack_route = next(iter(kb.routes.groups[PACK_GROUP].topics.values()))
        sides["kbridge_pack"] = (pack_route.queue or "", done_key(pack_route.name),
                                 _kbridge_filler(kb, pack_route, bench.sizes.partitions))
    for side, task_name in BARE_SIDES.items():
        queue = bench.config.queue(side)
        sides[side] = (queue, done_key(queue), _bare_filler(celery_app, task_name, queue))

    node = f"{NAME}-{bench.config.run}@{socket.gethostname()}"
    worker = start_worker(bench, [bench.config.queue(f"{NAME}-idle")], name=f"{NAME}-worker", node=node)
    names = list(sides)
    rounds: list[dict[str, float]] = []
    try:
        for r in range(ROUNDS):
            this_round: dict[str, float] = {}
            # Rotating, never alternating: a side is never drained twice in a row, so a BRPOP
            # the worker had in flight when it was told to stop cannot pick up the next fill.
            for side in names[r % len(names):] + names[:r % len(names)]:
                queue, key, fill = sides[side]
                fill(r * per_round, per_round)
                this_round[side] = drain(bench, celery_app, node, worker, queue, key, per_round, side)
            rounds.append(this_round)
    finally:
        worker.stop()
        bench.redis.delete(*(queue for queue, _, _ in sides.values()))

    rates = {side: statistics.median(r[side] for r in rounds) for side in sides}
    results = [_packed(rates, per_round)] if "kbridge_pack" in rates else []
    return [Result(
        "per-message worker", "task/s", value=rates["kbridge"], baseline=rates["bare"], baseline_name="bare task",
        target=Target(">=", 0.9),
        details={
            "tasks_per_side": per_round * ROUNDS, "rounds": rounds,
            "median_rates": {k: round(v, 1) for k, v in rates.items()},
            "kbridge_vs_bare_acks_late": round(rates["kbridge"] / rates["bare_acks_late"], 3),
            "worker_log": worker.log_path,
        },
    ), *results]


def _packed(rates: dict[str, float], per_round: int) -> Result:
    return Result(
        "packed per-message (pack=50)", "msg/s", value=rates["kbridge_pack"], baseline=rates["bare"],
        baseline_name="bare task", target=Target(">=", 5.0),
        details={"messages_per_side": per_round * ROUNDS, "vs_kbridge_task_per_message":
                 round(rates["kbridge_pack"] / rates["kbridge"], 2)},
    )
