"""`python -m bench [--only enqueue,latency] [--messages N] ...`: run benchmarks, print a table, save JSON.

Starts its own Tansu broker and Redis on free ports (stopped again however the run
ends), gives every benchmark its own topic, consumer group and queue, and keeps
going when one benchmark fails, so one regression does not hide the others.
Exit code: 0 when every selected benchmark ran (1 with --strict and a missed target),
1 when one failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from . import backlog, batch, enqueue, latency, memory, ordering, per_message, raw, redis_memory, reports
from .config import DEFAULT_MAX_POLL_RECORDS, BenchConfig
from .harness import Bench, Sizes, services
from .results import Result, table, write_json

RunFn = Callable[[Bench], Result | list[Result]]

BENCHMARKS: dict[str, tuple[RunFn, str]] = {
    "raw": (raw.run, "kafka-python consume + json.loads, no kbridge (the throughput baseline)"),
    "enqueue": (enqueue.run, "listener throughput, one Celery task per message, into Redis, three payload sizes"),
    "batch": (batch.run, "batch_consuming end to end through a real prefork worker"),
    "permsg": (per_message.run, "worker drain rate, kbridge task (and pack=50) vs bare Celery task"),
    "redismem": (redis_memory.run, "Redis memory per queued task, kbridge vs plain apply_async"),
    "backlog": (backlog.run, "the listener's longest poll-loop turn with a large backlog queued"),
    "memory": (memory.run, "listener RSS after a long stream"),
    "latency": (latency.run, "produce -> perform start, p50 and p99, at a steady rate"),
    "reports": (reports.run, "listener throughput with web_reports on vs off (what reports cost)"),
    "ordering": (ordering.run, "ordering='key' vs unordered on 64 keys, and skip_duplicates vs plain, -c 4 worker"),
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Sizes()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", metavar="A,B",
                   help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    p.add_argument("--messages", type=int, default=defaults.messages,
                   help="messages for raw, enqueue and batch (default %(default)s)")
    p.add_argument("--worker-messages", type=int, default=defaults.worker_messages,
                   help="tasks per side for permsg (default %(default)s)")
    p.add_argument("--memory-messages", type=int, default=defaults.memory_messages,
                   help="messages for memory (default %(default)s)")
    p.add_argument("--memory-tasks", type=int, default=defaults.memory_tasks,
                   help="tasks queued per side for redismem (default %(default)s)")
    p.add_argument("--backlog-tasks", type=int, default=defaults.backlog_tasks,
                   help="tasks queued before the listener runs, for backlog (default %(default)s)")
    p.add_argument("--latency-rate", type=float, default=defaults.latency_rate,
                   help="messages/s for latency (default %(default)s)")
    p.add_argument("--latency-seconds", type=float, default=defaults.latency_seconds,
                   help="seconds of steady production for latency (default %(default)s)")
    p.add_argument("--partitions", type=int, default=defaults.partitions,
                   help="partitions per topic (default %(default)s)")
    p.add_argument("--raw-repeats", type=int, default=defaults.raw_repeats,
                   help="raw baseline reads per topic, half before and half after the kbridge run; "
                   "the median is taken (default %(default)s)")
    p.add_argument("--max-poll-records", type=int, default=DEFAULT_MAX_POLL_RECORDS,
                   help="kbridge's max_poll_records in the bench app (default %(default)s, as the raw baseline; "
                   "kbridge's own default is 500)")
    p.add_argument("--fetch-max-wait-ms", type=int, default=None,
                   help="kafka fetch_max_wait_ms for kbridge and the raw baselines (default: kafka-python's 500)")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json", help="JSON results file")
    p.add_argument("--profile", action="store_true",
                   help="run the in-process listeners (enqueue, batch) under cProfile; stats go next to --output. "
                   "cProfile inflates per-call costs: for shares of time prefer "
                   "`py-spy record -f raw -o out.txt --threads -- python -m bench --only enqueue`")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("-v", "--verbose", action="store_true", help="log kbridge at INFO")
    args = p.parse_args(argv)
    args.selected = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in args.selected if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def kafka_c_crc() -> bool:
    """Whether kafka-python validates record CRCs with the C crc32c package, or its slow pure-Python fallback."""
    from kafka.record import util

    return getattr(util, "crc32c_c", None) is not None


def run_one(name: str, bench: Bench) -> list[Result]:
    fn, _ = BENCHMARKS[name]
    started = time.monotonic()
    try:
        produced = fn(bench)
        results = produced if isinstance(produced, list) else [produced]
    except Exception as exc:
        traceback.print_exc()
        results = [Result(name, "", error=f"{type(exc).__name__}: {exc}")]
    for r in results:
        r.seconds = round(time.monotonic() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    sizes = Sizes(
        messages=args.messages, worker_messages=args.worker_messages, memory_messages=args.memory_messages,
        memory_tasks=args.memory_tasks, backlog_tasks=args.backlog_tasks,
        latency_rate=args.latency_rate, latency_seconds=args.latency_seconds, partitions=args.partitions,
        raw_repeats=args.raw_repeats,
    )
    started_at = datetime.now(timezone.utc)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    run = uuid.uuid4().hex[:8]
    results: list[Result] = []
    with services() as (kafka, redis_svc):
        config = BenchConfig(run=run, kafka=kafka.bootstrap, redis_url=redis_svc.url,
                             max_poll_records=args.max_poll_records, fetch_max_wait_ms=args.fetch_max_wait_ms)
        bench = Bench(config, kafka, redis_svc, sizes,
                      profile_dir=args.output.parent / f"profile-{run}" if args.profile else None)
        for name in args.selected:
            print(f"[bench] {name}: {BENCHMARKS[name][1]} ...", file=sys.stderr, flush=True)
            results += run_one(name, bench)
            print(f"[bench] {name}: done in {results[-1].seconds:.0f}s", file=sys.stderr, flush=True)
    total = time.monotonic() - started
    load_after = os.getloadavg()[0]
    cpus = os.cpu_count() or 1

    print(table(results))
    if max(load_before, load_after) > cpus:
        print(f"\nnote: the machine was busy (1-min load average {load_before:.1f} at start, {load_after:.1f} at end, "
              f"{cpus} CPUs): other processes compete with the listener, workers, Redis and Tansu, so ratios are "
              "noisier than usual and latency can be far off; run again when it is quieter.")
    if not kafka_c_crc():
        print("\nnote: kafka-python checks CRCs with its pure-Python crc32c here (`pip install crc32c` brings the C "
              "one): that is ~70% of the raw baseline's time, which flatters every ratio against raw.")
    print(f"\ntotal {total:.0f}s; run {run}; results in {args.output}")
    if bench.profile_dir is not None:
        print(f"listener profiles in {bench.profile_dir} (python -m pstats <file>)")
    write_json(args.output, results, {
        "started": started_at.isoformat(), "total_seconds": round(total, 1), "run": run,
        "sizes": asdict(sizes), "argv": sys.argv[1:],
        "max_poll_records": args.max_poll_records, "fetch_max_wait_ms": args.fetch_max_wait_ms,
        "kafka_crc32c": "C" if kafka_c_crc() else "pure Python",
        "cpus": cpus, "load_average": {"start": load_before, "end": load_after},
    })
    if any(r.error for r in results):
        return 1
    if args.strict and any(r.met is False for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
