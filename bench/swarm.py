"""`python -m bench.swarm`: a CPU-heavy before_enqueue filter through swarm 1 vs swarm 2, as a ratio.

Why: one listener process runs its filters on one core. A swarm of N nodes in the
same consumer group spreads the partitions over N processes, so a CPU-bound filter
should scale with the cores. Each configuration gets a fresh topic (6 partitions),
consumer group and queue; the swarm (`python -m kbridge.swarm`) starts on the empty
topic, and only once every node owns partitions are the messages produced. The
rate is messages / (first produce -> every offset committed). Tasks go to Redis
(no worker needed: the listener's side is what is measured).

This module is also the app the swarm subprocess runs (`--app bench.swarm:app`),
configured by SWARM_BENCH_* environment variables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import time
import uuid

from celery import Celery
from kafka import KafkaProducer

from kbridge import BaseConsumer, KBridge, before_enqueue
from kbridge.testing import processes
from kbridge.testing.kafka import FAST_GROUP, committed_offsets, create_topics, wait_until
from kbridge.testing.services import kafka_service, redis_service

RUN = os.environ.get("SWARM_BENCH_RUN", "local")
WORK = int(os.environ.get("SWARM_BENCH_WORK", "30000"))
PARTITIONS = 6
TOPIC = f"swarmbench-{RUN}"

celery_app = Celery("swarmbench", broker=os.environ.get("SWARM_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
celery_app.conf.update(task_default_queue=f"swarmbench-{RUN}", broker_connection_retry_on_startup=True)
app = KBridge(
    client_id=f"swarmbench-{RUN}",
    kafka={"bootstrap_servers": os.environ.get("SWARM_BENCH_KAFKA", "127.0.0.1:9092"), **FAST_GROUP},
    celery=celery_app,
    max_poll_records=500,
)


def burn(seed: int, work: int = WORK) -> int:
    """Pure-Python CPU work, as a validating or scoring filter would do; holds the GIL throughout."""
    acc = seed
    for i in range(work):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    return acc


class CpuHeavyConsumer(BaseConsumer):
    @before_enqueue
    def expensive_check(self) -> bool:
        return burn(self.params.payload["n"]) >= 0  # always true: every message is enqueued

    def perform(self) -> None:
        pass


app.topic(TOPIC, consumer=CpuHeavyConsumer)


# -- the benchmark -----------------------------------------------------------------


def filter_cost_ms(work: int) -> float:
    started = time.perf_counter()
    for i in range(200):
        burn(i, work)
    return (time.perf_counter() - started) / 200 * 1000


def measure(nodes: int, messages: int, work: int, bootstrap: str, redis_url: str) -> tuple[float, float]:
    """Messages per second through a swarm of `nodes` nodes, and how many cores its nodes kept busy."""
    run = f"{uuid.uuid4().hex[:8]}-n{nodes}"
    topic = f"swarmbench-{run}"
    create_topics(bootstrap, [topic], PARTITIONS)
    env = {"SWARM_BENCH_RUN": run, "SWARM_BENCH_WORK": str(work), "SWARM_BENCH_KAFKA": bootstrap,
           "SWARM_BENCH_REDIS": redis_url}
    argv = [sys.executable, "-m", "kbridge.swarm", "--app", "bench.swarm:app", "--nodes", str(nodes)]
    swarm = processes.Process(f"swarmbench-n{nodes}", argv, processes.child_env(env)).start()
    try:
        wait_until(lambda: _owned(swarm.log(), topic, nodes), 90, what=f"{nodes} node(s) to own the partitions",
                   alive=[swarm])
        values = [json.dumps({"n": i, "pad": "x" * 100}).encode() for i in range(messages)]
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        pids = _node_pids(swarm.log())
        cpu_before = sum(_cpu_seconds(pid) for pid in pids)
        started = time.monotonic()
        futures = [producer.send(topic, value=v) for v in values]
        producer.flush()
        ends: dict[int, int] = {}
        for f in futures:
            md = f.get(timeout=30)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
        producer.close()
        group = f"swarmbench-{run}_{topic}"
        wait_until(lambda: {tp.partition: o for tp, o in committed_offsets(bootstrap, group).items()} == ends,
                   600, interval=0.1, what="every offset committed", alive=[swarm])
        took = time.monotonic() - started
        cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu_before
        swarm.signal(signal.SIGTERM)
        code = swarm.wait(60)
        if code != 0:
            raise RuntimeError(f"the swarm exited with {code}; log in {swarm.log_path}")
        return messages / took, cpu / took
    finally:
        swarm.kill_group()
        for pid in _node_pids(swarm.log()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _node_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"node \d+ started \(pid (\d+)\)", log)]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _owned(log: str, topic: str, nodes: int) -> bool:
    """Every current node's last assignment is non-empty and together they cover the topic."""
    pids = {m[0]: m[1] for m in re.findall(r"node (\d+) started \(pid (\d+)\)", log)}
    if len(pids) < nodes:
        return False
    owned = []
    for pid in pids.values():
        found = re.findall(rf"\[node \d+ pid {pid}\] .*partitions assigned: ([^\n]*)", log)
        if not found or found[-1] == "none":
            return False
        owned += found[-1].split(", ")
    return sorted(owned) == sorted(f"{topic}-{p}" for p in range(PARTITIONS))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.swarm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=6000, help="messages per run (default %(default)s)")
    p.add_argument("--work", type=int, default=WORK, help="filter loop iterations per message (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="swarm 1 / swarm 2 pairs (default %(default)s)")
    args = p.parse_args(argv)
    cost = filter_cost_ms(args.work)
    print(f"[bench.swarm] filter cost {cost:.2f} ms/message in this process (one core: <= {1000 / cost:.0f} msg/s); "
          f"{os.cpu_count()} CPUs; {args.messages} messages x {PARTITIONS} partitions", file=sys.stderr)
    kafka = kafka_service()
    try:
        redis_svc = redis_service()
        try:
            rates: dict[int, list[float]] = {1: [], 2: []}
            cores: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.repeats):
                for nodes in (1, 2):
                    rate, busy = measure(nodes, args.messages, args.work, kafka.bootstrap, redis_svc.url)
                    rates[nodes].append(rate)
                    cores[nodes].append(busy)
                    print(f"[bench.swarm] swarm {nodes}: {rate:,.0f} msg/s, nodes kept {busy:.2f} cores busy "
                          f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr)
        finally:
            redis_svc.stop()
    finally:
        kafka.stop()
    # Others share this machine: each swarm 2 run is compared with the swarm 1 run just before it,
    # and the median of those ratios is the figure. msg/s per busy core shows the per-process cost.
    ratios = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    for i, (one, two) in enumerate(zip(rates[1], rates[2], strict=True)):
        print(f"run {i + 1}: swarm 1 {one:,.0f} msg/s on {cores[1][i]:.2f} cores "
              f"({one / max(cores[1][i], 1e-9):,.0f} msg/s per busy core); swarm 2 {two:,.0f} msg/s on "
              f"{cores[2][i]:.2f} cores ({two / max(cores[2][i], 1e-9):,.0f} msg/s per busy core); "
              f"ratio {ratios[i]:.2f}x")
    print(f"swarm 2 / swarm 1: {statistics.median(ratios):.2f}x (median of {len(ratios)} paired runs; filter "
          f"{cost:.2f} ms/message, {args.messages} messages, {PARTITIONS} partitions, {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
