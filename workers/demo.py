"""The whole pipeline on one machine, no Docker: `python -m workers.demo [--events N] [--timeout S]`.

It starts an embedded Kafka-protocol broker (Tansu) and Redis, a real Celery worker
and a real `kbridge listen`, produces events of which a known share is noise, and
watches until every business event has been performed and every offset committed.
The summary counts losses and duplicates independently of kbridge: the demo knows
which (partition, offset) it wrote and which ones the filter must drop, and
EventsConsumer records every offset it performs.

KBRIDGE_TEST_KAFKA / KBRIDGE_TEST_REDIS_URL point it at running services instead;
the "events" topic must not exist there yet.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis
from kafka import KafkaProducer

from kbridge.testing.kafka import committed_offsets, create_topics
from kbridge.testing.services import ServiceError, kafka_service, redis_service

from .consumers import SEEN_KEY, is_noise

TOPIC, GROUP_ID, PARTITIONS = "events", "workers_events", 3
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where `workers` is importable from
STOP_WAIT = 40.0  # seconds; above the listener's 30 s shutdown_timeout, so it gets to exit on its own


@dataclass
class Child:
    """A subprocess in its own session: Ctrl-C reaches only the demo, which then stops it in order."""

    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for {STOP_WAIT:.0f}s; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a process is started and recorded, so none can be left running unseen."""
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])  # now the normal handler unwinds through run()'s finally


def spawn(name: str, argv: list[str], env: dict[str, str], logdir: Path) -> Child:
    path = logdir / f"{name}.log"
    log = path.open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    print(f"{name:<9} pid {proc.pid}, log {path}")
    return Child(name, proc, log)


def make_events(n: int) -> list[dict[str, Any]]:
    """Every 10th event is a heartbeat and every 10th (shifted) a test event: 20 % noise."""
    noise: dict[int, dict[str, Any]] = {0: {"type": "heartbeat"}, 5: {"type": "signup", "test": True}}
    return [{"id": i, **noise.get(i % 10, {"type": ("order", "signup")[i % 2]})} for i in range(n)]


def produce(bootstrap: str, events: list[dict[str, Any]]) -> tuple[set[tuple[int, int]], dict[int, int]]:
    """Write the events; return where the non-noise ones landed and the end offset of each partition."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(TOPIC, key=f"user-{e['id'] % 37}".encode(), value=json.dumps(e).encode())
                   for e in events]
        producer.flush()
        expected: set[tuple[int, int]] = set()
        ends: dict[int, int] = {}
        for event, future in zip(events, futures, strict=True):
            md = future.get(timeout=30)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
            if not is_noise(event):
                expected.add((md.partition, md.offset))
        return expected, ends
    finally:
        producer.close()


def read_committed(bootstrap: str, last: dict[int, int]) -> dict[int, int]:
    """The group's committed offsets; before the group has committed, the broker may answer with an error."""
    try:
        return {tp.partition: o for tp, o in committed_offsets(bootstrap, GROUP_ID).items() if tp.topic == TOPIC}
    except Exception:
        return last


def read_seen(store: redis.Redis) -> dict[tuple[int, int], int]:
    seen: dict[tuple[int, int], int] = {}
    for field, runs in store.hgetall(SEEN_KEY).items():
        partition, offset = (field.decode() if isinstance(field, bytes) else field).split(":")
        seen[(int(partition), int(offset))] = int(runs)
    return seen


def watch(bootstrap: str, store: redis.Redis, children: list[Child], produced: int,
          expected: set[tuple[int, int]], ends: dict[int, int], timeout: float) -> str | None:
    """Show progress until done; return why it stopped early, or None when everything arrived."""
    start = time.monotonic()
    deadline, last_line = start + timeout, ""
    committed: dict[int, int] = {}
    tty = sys.stdout.isatty()
    while True:
        committed = read_committed(bootstrap, committed)
        performed = len(expected & read_seen(store).keys())
        line = (f"produced {produced}  committed {sum(committed.values())}/{sum(ends.values())}  "
                f"performed {performed}/{len(expected)}")
        if tty:  # one line, rewritten in place
            print(f"\r{line}  ({time.monotonic() - start:.0f}s)   ", end="", flush=True)
        elif line != last_line:  # in a log, only what changed
            print(line, flush=True)
        last_line = line
        if performed == len(expected) and all(committed.get(p, 0) >= end for p, end in ends.items()):
            reason = None
        elif dead := [c for c in children if c.proc.poll() is not None]:
            reason = ", ".join(f"{c.name} exited early with code {c.proc.returncode}" for c in dead)
        elif time.monotonic() > deadline:
            reason = f"timed out after {timeout:.0f}s"
        else:
            time.sleep(0.5)
            continue
        if tty:
            print()
        return reason


def run(n_events: int, timeout: float) -> int:
    started = time.monotonic()
    logdir = Path(tempfile.mkdtemp(prefix="kbridge-demo-"))
    services: list[Any] = []
    children: list[Child] = []
    listener_rc: int | None = None
    try:
        with signals_deferred():
            kafka = kafka_service()
            services.append(kafka)
        with signals_deferred():
            rds = redis_service()
            services.append(rds)
        print(f"kafka     {kafka.bootstrap}, log {kafka.log_path or '(external)'}")
        print(f"redis     {rds.url}, log {rds.log_path or '(external)'}")
        create_topics(kafka.bootstrap, [TOPIC], partitions=PARTITIONS)
        store = redis.Redis.from_url(rds.url)
        store.delete(SEEN_KEY)  # only matters with an external Redis (KBRIDGE_TEST_REDIS_URL)

        env = {**os.environ, "KBRIDGE_DEMO_KAFKA": kafka.bootstrap, "KBRIDGE_DEMO_REDIS": rds.url,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        py = sys.executable
        with signals_deferred():
            children.append(spawn("worker", [py, "-m", "celery", "-A", "workers", "worker", "-c", "2",
                                             "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
                                  env, logdir))
        with signals_deferred():
            children.append(spawn("listener", [py, "-m", "kbridge", "listen", "--app", "workers:kbridge_app"],
                                  env, logdir))

        events = make_events(n_events)
        expected, ends = produce(kafka.bootstrap, events)
        spread = "+".join(str(ends[p]) for p in sorted(ends))
        print(f"produced {len(events)} events to {TOPIC} (partitions: {spread}), "
              f"{len(events) - len(expected)} of them noise for the filter")
        reason = watch(kafka.bootstrap, store, children, len(events), expected, ends, timeout)

        listener_rc = children[1].stop()  # first the listener: it commits and leaves the group
        worker_rc = children[0].stop()  # then the worker: a warm shutdown finishes its tasks
        seen = read_seen(store)  # after both stopped, so late duplicates are counted too
    finally:
        for child in reversed(children):
            child.stop()
        for svc in reversed(services):
            svc.stop()

    performed = len(expected & seen.keys())
    lost = len(expected - seen.keys())
    duplicates = sum(runs - 1 for runs in seen.values())
    unexpected = len(seen.keys() - expected)  # noise that ran anyway, or offsets the demo never wrote
    print()
    for label, value in [
        ("produced", len(events)), ("filtered", len(events) - len(expected)),
        ("performed", f"{performed} (expected {len(expected)})"), ("duplicates", duplicates),
        ("lost", f"{lost} (never performed)"), ("unexpected", unexpected),
        ("elapsed", f"{time.monotonic() - started:.1f}s"), ("listener", f"exit code {listener_rc}"),
        ("worker", f"exit code {worker_rc}"), ("logs", logdir),
    ]:
        print(f"{label:<11}{value}")
    problems = [reason] if reason else []
    problems += [f"{lost} event(s) lost"] if lost else []
    problems += [f"{unexpected} event(s) performed that should not have been"] if unexpected else []
    problems += [f"listener exited with code {listener_rc}, not 0"] if listener_rc != 0 else []
    if problems:
        print(f"FAILED: {'; '.join(problems)}")
        return 1
    print("OK: every event performed, every offset committed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="events to produce (default 500)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for them (default 120)")
    args = parser.parse_args(argv)
    if args.events < 1 or args.timeout <= 0:
        parser.error("--events must be >= 1 and --timeout > 0")
    # SIGTERM unwinds like Ctrl-C, through the finally that stops children and services.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args.events, args.timeout)
    except ServiceError as exc:
        print(f"FAILED: could not start a service: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; children and services stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
