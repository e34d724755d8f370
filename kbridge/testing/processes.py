"""Real listener and celery worker subprocesses, for integration tests and the demo.

Each writes to its own log file, so a failing test can show what the process said.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Process:
        if not self.log_path:
            fd, self.log_path = tempfile.mkstemp(prefix=f"kbridge-{self.name}-", suffix=".log")
            os.close(fd)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not log {text!r} within {timeout:.0f}s; log:\n{self.log()[-4000:]}")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL of the whole process group if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()
        return self.proc.returncode

    def kill_group(self) -> None:
        """SIGKILL the process and any children it left behind (prefork pool members)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    cwd = os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, env.get("PYTHONPATH", "")) if p)
    return env


def listener(app: str, env: Mapping[str, str], groups: list[str] | None = None, name: str = "listener") -> Process:
    argv = [sys.executable, "-m", "kbridge", "listen", "--app", app]
    if groups:
        argv += ["--consumer-groups", ",".join(groups)]
    return Process(name, argv, child_env(env))


def celery_worker(
    celery_app: str, env: Mapping[str, str], queues: list[str], concurrency: int = 2, name: str = "worker"
) -> Process:
    argv = [
        sys.executable, "-m", "celery", "-A", celery_app, "worker", "-P", "prefork", "-c", str(concurrency),
        "-Q", ",".join(queues), "-n", f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
    ]
    return Process(name, argv, child_env(env))


class Supervisor(threading.Thread):
    """Restarts a process whenever it exits, as systemd's Restart=always or Kubernetes would."""

    def __init__(self, process: Process, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name=f"supervise-{process.name}")
        self.process = process
        self.interval = interval
        self.restarts = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            proc = self.process.proc
            if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                self.process.kill_group()  # reap pool children the dead main process left behind
                self.process.start()
                self.restarts += 1

    def stop(self) -> int | None:
        self._stopping.set()
        self.join(5)
        return self.process.stop()
