"""Benchmark 5: the listener's resident memory after a long stream (one task per message).

A real `kbridge listen` subprocess: the baseline is its RSS once it has joined its
group and is idle, the value its RSS after every message was enqueued and committed.
A listener that keeps something per message (params, futures, log records) shows here
as growth with the message count; the target is idle + 10 MB, measured a housekeeping
interval after the stream ended. Transient buffers
count too: Python seldom returns freed memory to the OS, so RSS stays near the peak,
and the peak scales with max_poll_records (one poll batch is held as records, as task
messages and as the packed Redis pipeline at once); --max-poll-records shows the effect.
"""

from __future__ import annotations

import time

from kbridge.listener.processor import HOUSEKEEPING_INTERVAL
from kbridge.testing.kafka import committed_offsets, wait_until

from .harness import Bench, create_topic, memory_kb, produce, start_listener
from .results import Result, Target

NAME = "memory"
SETTLE_SECONDS = 1.0
GROWTH_MB = 10.0  # the target: idle RSS + this, after the stream


def run(bench: Bench) -> Result:
    topic, queue = bench.config.topic(NAME), bench.config.queue(NAME)
    n = bench.sizes.memory_messages
    create_topic(bench, topic)
    listener = start_listener(bench, NAME, name=f"{NAME}-listener")
    try:
        time.sleep(SETTLE_SECONDS)
        idle = memory_kb(listener.pid)
        ends = produce(bench, topic, n)
        peak_seen = [idle["VmRSS"]]

        def all_enqueued() -> bool:
            peak_seen.append(memory_kb(listener.pid)["VmRSS"])
            return int(bench.redis.llen(queue)) >= n

        started = time.monotonic()
        wait_until(all_enqueued, timeout=max(600, n / 20), interval=0.5, what=f"{n} tasks in {queue}",
                   alive=[listener])
        wanted = {tp: end for tp, end in ends.items()}
        wait_until(lambda: committed_offsets(bench.kafka.bootstrap, bench.config.group_id(NAME)) == wanted,
                   timeout=60, interval=0.5, what="every offset committed", alive=[listener])
        seconds = time.monotonic() - started
        time.sleep(HOUSEKEEPING_INTERVAL + 1)  # the stream is over: what the listener keeps, not what it just used
        final = memory_kb(listener.pid)
    finally:
        code = listener.stop()
        bench.redis.delete(queue)
    mb = 1 / 1024
    return Result(
        "listener memory", "MB", value=final["VmRSS"] * mb, baseline=idle["VmRSS"] * mb, baseline_name="idle",
        target=Target("<=", round(idle["VmRSS"] * mb + GROWTH_MB, 1), on="value"),
        details={"messages": n, "peak_rss_mb": round(final["VmHWM"] * mb, 1), "seconds": round(seconds, 1),
                 "max_sampled_rss_mb": round(max(peak_seen) * mb, 1), "exit_code": code,
                 "listener_log": listener.log_path},
    )
