"""Benchmark: the listener's longest poll-loop turn while a large backlog waits in Redis (no worker running).

The queue is filled with backlog_tasks kbridge tasks (500k by default) before the
listener starts, and a few hundred of them are taken off its tail without being acked,
as a worker that died would leave them, so the ledger's reaper has work. Then the
listener enqueues a stream on top and keeps running through several housekeeping
passes. Every turn of the poll loop is timed; the value is the longest, the baseline
the median turn.
"""

from __future__ import annotations

import statistics
import threading
import time

from kbridge.listener import processor as processor_module
from kbridge.params import Params
from kbridge.runtime import Runtime

from .app import build
from .harness import Bench, TimedProcessor, create_topic, in_process_listener, payload, produce, wait_done
from .results import Result, Target

NAME = "backlog"
CHUNK = 5000
TAKEN = 300  # tasks taken off the queue and never acked
HOUSEKEEPING_PASSES = 3


class TurnTimer(TimedProcessor):
    turns: list[float]
    housekeeping: list[float]

    def tick(self) -> None:
        started = time.perf_counter()
        try:
            super().tick()
        finally:
            self.turns.append(time.perf_counter() - started)

    def _housekeeping(self) -> None:
        started = time.perf_counter()
        try:
            super()._housekeeping()
        finally:
            self.housekeeping.append(time.perf_counter() - started)


def run(bench: Bench) -> Result:
    topic, queue = bench.config.topic(NAME), bench.config.queue(NAME)
    n = bench.sizes.backlog_tasks
    kb, _ = build(bench.config)
    route = next(iter(kb.routes.select([NAME])[0].topics.values()))
    create_topic(bench, topic)
    filler = Runtime.of(kb).backend(route.backend)
    try:
        now_ms = time.time() * 1000.0
        filled_at = time.monotonic()
        for start in range(0, n, CHUNK):  # offsets far past what the topic holds: never read back
            filler.enqueue(route, [
                Params(topic=route.name, partition=0, offset=10**9 + i, raw_payload=payload(i), timestamp_ms=now_ms,
                       receive_time_ms=now_ms) for i in range(start, min(n, start + CHUNK))
            ])
        fill_seconds = time.monotonic() - filled_at
        for _ in range(TAKEN):
            bench.redis.rpop(queue)
        ends = produce(bench, topic, bench.sizes.messages)
        TurnTimer.turns, TurnTimer.housekeeping = [], []
        with in_process_listener(bench, kb, NAME, ends, NAME, kind=TurnTimer) as processor:
            wait_done(processor, timeout=600, what=NAME)
            deadline = time.monotonic() + processor_module.HOUSEKEEPING_INTERVAL * (HOUSEKEEPING_PASSES + 2)
            while len(TurnTimer.housekeeping) < HOUSEKEEPING_PASSES and time.monotonic() < deadline:
                threading.Event().wait(0.5)
            queued = int(bench.redis.llen(queue))
    finally:
        bench.redis.delete(queue, f"kbridge.pending.{queue}", f"kbridge.pending_seq.{queue}",
                           f"kbridge.ledger.{queue}", f"kbridge.ledger_index.{queue}")
    turns, housekeeping = TurnTimer.turns, TurnTimer.housekeeping
    return Result(f"longest poll-loop turn, {n // 1000}k queued", "s", value=max(turns),
                  baseline=statistics.median(turns), baseline_name="median turn", target=Target("<=", 1.0, on="value"),
                  details={"turns": len(turns), "housekeeping_passes": len(housekeeping),
                           "longest_housekeeping_s": round(max(housekeeping, default=0.0), 4),
                           "queued_at_end": queued, "fill_seconds": round(fill_seconds, 1),
                           "stream_messages": sum(ends.values()), "taken_unacked": TAKEN})
