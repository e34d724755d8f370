"""Shared machinery: services, topics and messages, subprocesses, and an in-process timed listener."""

from __future__ import annotations

import cProfile
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition

from kbridge import KBridge
from kbridge.listener.collector import tune_collector
from kbridge.listener.processor import GroupProcessor
from kbridge.runtime import Runtime
from kbridge.testing import processes
from kbridge.testing.kafka import create_topics, wait_until
from kbridge.testing.services import KafkaService, RedisService, kafka_service, redis_service

from .app import ready_key
from .config import BenchConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP = "bench.app:app"
CELERY_APP = "bench.app:celery_app"

Ends = dict[TopicPartition, int]


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does; the CLI sets these."""

    messages: int = 100_000  # a drain of ~1.5 s: at 40k, its first fetch and the raw reads' stalls weighed in
    worker_messages: int = 9_000
    memory_messages: int = 50_000
    memory_tasks: int = 100_000  # redismem: tasks queued per side
    backlog_tasks: int = 500_000  # backlog: tasks queued before the listener runs
    latency_rate: float = 200.0
    latency_seconds: float = 15.0
    partitions: int = 3
    raw_repeats: int = 4


@dataclass
class Bench:
    """What every benchmark receives: this run's names, its services and sizes."""

    config: BenchConfig
    kafka: KafkaService
    redis_service: RedisService
    sizes: Sizes
    profile_dir: Path | None = None
    _redis: redis.Redis | None = field(default=None, repr=False)

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_service.url)
        return self._redis

    def subprocess_env(self) -> dict[str, str]:
        return {**self.config.env(), "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)}


@contextmanager
def services() -> Iterator[tuple[KafkaService, RedisService]]:
    """A fresh Tansu and Redis on free ports, always stopped again (KBRIDGE_TEST_* env vars select external ones)."""
    kafka = kafka_service()
    try:
        redis_svc = redis_service()
        try:
            yield kafka, redis_svc
        finally:
            redis_svc.stop()
    finally:
        kafka.stop()


# -- messages ----------------------------------------------------------------


def payload(i: int) -> bytes:
    """A ~200-byte JSON event; its "sent" field is the wall-clock time it was built."""
    return json.dumps({
        "id": i,
        "user": f"user-{i % 1000}",
        "event": "page_view",
        "counter": i,
        "sent": time.time(),
        "props": {"path": f"/products/{i % 9973}", "ref": "campaign-spring", "ua": "Mozilla/5.0 (X11; Linux)"},
    }).encode()


def create_topic(bench: Bench, topic: str) -> None:
    create_topics(bench.kafka.bootstrap, [topic], bench.sizes.partitions)


def produce(bench: Bench, topic: str, n: int, make: Callable[[int], bytes] = payload) -> Ends:
    """Produce n messages round-robin over the partitions and wait for every ack.

    Returns the end offset of each partition, from the acks: Tansu's ListOffsets(LATEST)
    is wrong for multi-record batches, so it is never asked.
    """
    producer = KafkaProducer(
        bootstrap_servers=bench.kafka.bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024
    )
    try:
        parts = bench.sizes.partitions
        futures = [producer.send(topic, value=make(i), partition=i % parts) for i in range(n)]
        producer.flush()
        ends: Ends = {}
        for future in futures:
            md = future.get(timeout=60)
            tp = TopicPartition(md.topic, md.partition)
            ends[tp] = max(ends.get(tp, 0), md.offset + 1)
        return ends
    finally:
        producer.close()


def assigned_consumer(bench: Bench, topic: str, **config: Any) -> tuple[KafkaConsumer, list[TopicPartition]]:
    """A group-less consumer manually assigned every partition of topic, positioned at the beginning."""
    consumer = KafkaConsumer(bootstrap_servers=bench.kafka.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", **{**bench.config.kafka_tuning(), **config})
    tps = [TopicPartition(topic, p) for p in range(bench.sizes.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer, tps


# -- subprocesses --------------------------------------------------------------


def start_worker(
    bench: Bench, queues: Sequence[str], name: str, concurrency: int = 2, node: str | None = None
) -> processes.Process:
    """A real `celery worker -P prefork -c 2`, returned once it announced worker_ready.

    Logging at WARNING (Celery's own default): at INFO a worker writes two lines per
    task, which would be measured as much as the tasks themselves.
    """
    argv = [
        sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "-P", "prefork", "-c", str(concurrency),
        "-Q", ",".join(queues), "-n", node or f"{name}-{bench.config.run}-{time.monotonic_ns()}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning",
    ]
    key = ready_key(bench.config.run)
    before = int(bench.redis.get(key) or 0)
    proc = processes.Process(name, argv, processes.child_env(bench.subprocess_env())).start()
    try:
        wait_until(lambda: int(bench.redis.get(key) or 0) > before, 90, interval=0.1,
                   what=f"{name} to be ready", alive=[proc])
    except BaseException:
        proc.stop()
        raise
    return proc


def start_listener(bench: Bench, group: str, name: str) -> processes.Process:
    """A real `kbridge listen` subprocess for one consumer group, returned once its partitions are assigned."""
    proc = processes.listener(APP, bench.subprocess_env(), groups=[group], name=name).start()
    try:
        proc.wait_for_log("partitions assigned", timeout=90)
    except BaseException:
        proc.stop()
        raise
    return proc


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB, from /proc (no psutil needed)."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(rest.split()[0])
    return found


# -- the in-process listener -------------------------------------------------------


class TimedProcessor(GroupProcessor):
    """kbridge's own GroupProcessor, noting when partitions were assigned and when end offsets were committed.

    Timing starts at assignment, not at the first poll() call: Tansu holds every group
    join for ~3 s, which is neither kbridge's work nor part of the raw baseline (manual
    assignment, no group). It ends at the commit covering every end offset, which kbridge
    makes only after the broker confirmed every enqueue before it.
    """

    def __init__(self, app: KBridge, group_name: str, stop: threading.Event, ends: Ends,
                 paused: Callable[[str, str, int], bool] | None = None) -> None:
        if not hasattr(GroupProcessor, "_connect"):
            raise RuntimeError("GroupProcessor._connect is gone; update bench.harness.TimedProcessor to time the join")
        super().__init__(Runtime.of(app), app.routes.select([group_name])[0], stop, paused)
        self.ends = {f"{tp.topic}-{tp.partition}": end for tp, end in ends.items()}
        self.assigned_at: float | None = None
        self.committed_at: float | None = None
        self.assigned_cpu: float | None = None  # time.process_time() at the same moments
        self.committed_cpu: float | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None

    def _connect(self) -> KafkaConsumer:
        consumer = super()._connect()
        subscribe = consumer.subscribe

        def timed_subscribe(
            topics: Sequence[str] = (), pattern: str | None = None, listener: ConsumerRebalanceListener | None = None
        ) -> None:
            subscribe(topics=topics, pattern=pattern, listener=_AssignmentClock(self, listener))

        consumer.subscribe = timed_subscribe  # type: ignore[method-assign]
        return consumer

    def commit(self, only: Sequence[TopicPartition] | None = None) -> None:
        super().commit(only)
        if self.committed_at is None and all(
            self.stats.committed_offsets.get(k, -1) >= end for k, end in self.ends.items()
        ):
            self.committed_at = time.time()
            self.committed_cpu = time.process_time()
            self.done.set()

    @property
    def elapsed(self) -> float:
        assert self.assigned_at is not None and self.committed_at is not None
        return self.committed_at - self.assigned_at

    @property
    def cpu_seconds(self) -> float:
        """CPU time of this whole process (every thread) between assignment and the final commit."""
        assert self.assigned_cpu is not None and self.committed_cpu is not None
        return self.committed_cpu - self.assigned_cpu


class _AssignmentClock(ConsumerRebalanceListener):
    def __init__(self, processor: TimedProcessor, inner: ConsumerRebalanceListener | None) -> None:
        self.processor = processor
        self.inner = inner

    def on_partitions_revoked(self, revoked: Any) -> None:
        if self.inner is not None:
            self.inner.on_partitions_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned and self.processor.assigned_at is None:
            self.processor.assigned_at = time.time()
            self.processor.assigned_cpu = time.process_time()
        if self.inner is not None:
            self.inner.on_partitions_assigned(assigned)


@contextmanager
def in_process_listener(
    bench: Bench, kb: KBridge, group: str, ends: Ends, name: str,
    paused: Callable[[str, str, int], bool] | None = None,
    before_start: Callable[[TimedProcessor], None] | None = None,
    kind: type[TimedProcessor] | None = None,
) -> Iterator[TimedProcessor]:
    """Run a TimedProcessor on a thread of this process; stop it (commit, leave the group) on exit.

    With bench.profile_dir set, the listener thread runs under cProfile and its stats
    are written to <profile_dir>/<name>.prof.
    """
    tune_collector()  # as `kbridge listen` does in its own process
    stop = threading.Event()
    processor = (kind or TimedProcessor)(kb, group, stop, ends, paused)
    if before_start is not None:
        before_start(processor)

    def run() -> None:
        profiler = cProfile.Profile() if bench.profile_dir is not None else None
        try:
            if profiler is not None:
                profiler.enable()
            processor.run()
        except BaseException as exc:
            processor.error = exc
        finally:
            if profiler is not None:
                profiler.disable()
                assert bench.profile_dir is not None
                bench.profile_dir.mkdir(parents=True, exist_ok=True)
                profiler.dump_stats(bench.profile_dir / f"{name}.prof")
            processor.done.set()

    thread = threading.Thread(target=run, name=f"bench-{name}", daemon=True)
    thread.start()
    try:
        yield processor
    finally:
        stop.set()
        thread.join(60)
        processor.runtime.close()


def wait_done(processor: TimedProcessor, timeout: float, what: str, stall: float = 60.0) -> None:
    """Wait for the commit covering every end offset; fail early when the listener stops making progress."""
    deadline = time.monotonic() + timeout
    progress, last_change = -1, time.monotonic()
    while not processor.done.wait(1.0):
        now = time.monotonic()
        current = processor.stats.fetched + processor.stats.enqueued + len(processor.stats.committed_offsets)
        if current != progress:
            progress, last_change = current, now
        if now - last_change > stall or now > deadline:
            raise TimeoutError(
                f"{what}: not all offsets committed after {timeout - (deadline - now):.0f}s, no progress for "
                f"{now - last_change:.0f}s ({processor.summary()}; committed {processor.stats.committed_offsets}, "
                f"wanted {processor.ends})"
            )
    if processor.error is not None:
        raise RuntimeError(f"{what}: the listener failed: {processor.error!r}") from processor.error
    if processor.committed_at is None or processor.assigned_at is None:
        raise RuntimeError(f"{what}: the listener stopped before committing everything ({processor.summary()})")


def wait_for_count(
    bench: Bench, key: str, n: int, timeout: float, what: str, alive: Sequence[processes.Process] = ()
) -> int:
    """Wait until performs recorded n messages under key (see bench.app.record_done); fail early if a process died."""
    wait_until(lambda: int(bench.redis.get(f"{key}:count") or 0) >= n, timeout, interval=0.05, what=what,
               alive=alive)
    return int(bench.redis.get(f"{key}:count") or 0)
