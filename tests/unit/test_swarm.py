"""The swarm without Kafka: settings, reports, the health verdict, node handles, and the supervisor's
process management with a stand-in ListenerProcess (FakeServer) in real forked nodes.

The supervisor forks and owns signals, so it runs in a subprocess:
`python -c "from tests.unit.test_swarm import supervise_fake; ..."`. FAKE_MODE makes
exactly one node incarnation misbehave (the first to create FAKE_ONCE).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from kbridge import BaseConsumer, KBridge
from kbridge.config import Settings
from kbridge.errors import ConfigError
from kbridge.swarm import EXIT_ORPHANED, EXIT_SHUTDOWN_TIMEOUT, Supervisor, run, summary
from kbridge.swarm.handle import NodeHandle, describe
from kbridge.swarm.health import Limits, Report, rss_mb, verdict
from kbridge.swarm.node import fork_safety_problems
from kbridge.testing import processes
from kbridge.testing.kafka import wait_until

KAFKA = {"bootstrap_servers": "127.0.0.1:1"}
LIMITS = Limits(silence=10, stall=30, max_rss_mb=100)


# -- settings ----------------------------------------------------------------------


def test_swarm_settings_defaults() -> None:
    s = Settings.build({"client_id": "c", "kafka": KAFKA})
    assert (s.swarm_nodes, s.swarm_node_max_rss_mb, s.swarm_silence_timeout, s.swarm_stall_timeout) == (
        0, None, 60.0, 300.0)


def test_swarm_settings_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.build({"client_id": "c", "kafka": KAFKA, "swarm_nodes": -1, "swarm_node_max_rss_mb": 0,
                        "swarm_silence_timeout": 1, "swarm_stall_timeout": 0})
    problems = info.value.problems
    for needle in ("swarm_nodes must be", "swarm_node_max_rss_mb must be", "swarm_silence_timeout must be",
                   "swarm_stall_timeout must be"):
        assert sum(needle in p for p in problems) == 1, (needle, problems)
    assert len(problems) == 4


def test_info_summary() -> None:
    s = Settings.build({"client_id": "c", "kafka": KAFKA})
    assert summary(s).startswith("off (")
    line = summary(Settings.build({"client_id": "c", "kafka": KAFKA, "swarm_nodes": 3, "swarm_node_max_rss_mb": 512}))
    assert line.startswith("3 node(s);") and "RSS over 512 MB" in line and "SIGKILL 32s after SIGTERM" in line
    assert "exits with 3" in line


def test_run_needs_a_node() -> None:
    app = KBridge(client_id="c", kafka=KAFKA)
    with pytest.raises(ValueError, match="at least one node"):
        run(app, [], None)  # swarm_nodes defaults to 0: no swarm


# -- reports and the verdict ------------------------------------------------------


def test_report_round_trip_and_garbage() -> None:
    report = Report(2, 1234, 81.25, {"shop_events": 0.5, "shop_audit": None}, stopping=False)
    line = report.encode()
    assert line.endswith(b"\n") and len(line) < 4096
    assert Report.decode(line) == Report(2, 1234, 81.2, {"shop_events": 0.5, "shop_audit": None})
    for garbage in (b"", b"{", b"[]", b'{"node": 1}', b"\xff\xfe"):
        assert Report.decode(garbage) is None


def test_an_oversized_report_keeps_the_worst_group() -> None:
    ages: dict[str, float | None] = {f"group-{i:04d}-{'x' * 40}": float(i) for i in range(200)}
    decoded = Report.decode(Report(1, 1, 1.0, ages).encode())
    assert decoded is not None and list(decoded.loop_age) == [f"group-0199-{'x' * 40}"]


@pytest.mark.parametrize(
    ("report", "silent_for", "needle"),
    [
        (Report(1, 1, 50.0, {"g": 1.0}), 1.0, None),
        (None, 5.0, None),  # starting up: no report yet, within the silence limit
        (None, 11.0, "silent for 11s"),
        (Report(1, 1, 50.0, {"g": 1.0}), 12.0, "silent for 12s"),
        (Report(1, 1, 150.0, {"g": 1.0}), 1.0, "RSS 150 MB over swarm_node_max_rss_mb=100"),
        (Report(1, 1, 50.0, {"g": None, "h": 31.0}), 1.0, "consumer group h: poll loop stalled for 31s"),
        (Report(1, 1, 50.0, {"g": None}), 1.0, None),  # not polling yet (connecting): not a stall
        (Report(1, 1, 150.0, {"g": 99.0}, stopping=True), 1.0, None),  # already stopping: let it finish
    ],
)
def test_verdict(report: Report | None, silent_for: float, needle: str | None) -> None:
    found = verdict(report, silent_for, LIMITS)
    assert found is None if needle is None else (found is not None and needle in found), found


def test_no_memory_cap_by_default() -> None:
    assert verdict(Report(1, 1, 10_000.0), 0.0, Limits(10, 30, None)) is None


def test_rss_is_read() -> None:
    assert 5 < rss_mb() < 10_000


# -- fork safety -------------------------------------------------------------------


def test_an_app_whose_producer_connected_is_not_forked() -> None:
    from .test_producer import fake_app

    app, _ = fake_app()
    assert fork_safety_problems(app) == []
    app.produce("t", {"n": 1})
    assert any("KafkaProducer already exists in the supervisor" in p for p in fork_safety_problems(app))


# -- node handles ------------------------------------------------------------------


@contextlib.contextmanager
def child(seconds: float, code: int = 0) -> Iterator[NodeHandle]:
    pid = os.fork()
    if pid == 0:
        time.sleep(seconds)
        os._exit(code)
    handle = NodeHandle(pid)
    try:
        yield handle
    finally:
        if handle.poll() is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        handle.close()


def test_handle_reaps_an_exit_code_through_a_pidfd() -> None:
    with child(0.0, code=7) as handle:
        assert handle.pidfd is not None  # Linux >= 5.3
        wait_until(lambda: handle.poll() is not None, 10, interval=0.02)
        assert handle.returncode == 7 and not handle.send(signal.SIGTERM)


def test_handle_without_pidfd_signals_the_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open")
    with child(30.0) as handle:
        assert handle.pidfd is None and handle.poll() is None
        assert handle.send(signal.SIGTERM)
        wait_until(lambda: handle.poll() is not None, 10, interval=0.02)
        assert handle.returncode == -signal.SIGTERM
        assert describe(handle.returncode) == "signal SIGTERM" and describe(3) == "code 3"


# -- the supervisor with stand-in nodes ---------------------------------------------


class FakeServer:
    """A node's ListenerProcess without Kafka: one fake group; misbehaves as FAKE_MODE says, once."""

    def __init__(self, app: KBridge, groups: list[Any]) -> None:
        self.stop = threading.Event()
        self.processors = [SimpleNamespace(group=SimpleNamespace(id="fake_g"), stats=SimpleNamespace(last_tick=0.0))]

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda signum, frame: self.stop.set())
        mode = os.environ.get("FAKE_MODE", "")
        if mode and _first_to_misbehave():
            logging.getLogger("fake").warning("misbehaving: %s", mode)
            if mode == "stubborn":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                time.sleep(3600)
            elif mode == "hog":
                hoard = b"\x01" * (200 * 2**20)  # noqa: F841 - kept resident while waiting
                self.stop.wait()
                return 0
            elif mode == "stall":
                self.processors[0].stats.last_tick = time.monotonic() - 1000
        else:
            self.processors[0].stats.last_tick = time.monotonic()
        self.stop.wait()
        return 0


def _first_to_misbehave() -> bool:
    try:
        os.close(os.open(os.environ["FAKE_ONCE"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class Noop(BaseConsumer):
    def perform(self) -> None:
        pass


def supervise_fake(nodes: int) -> int:
    """The subprocess's body: a supervisor of `nodes` FakeServer nodes, settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    app = KBridge(client_id="fake", kafka=KAFKA, shutdown_timeout=float(os.environ.get("FAKE_SHUTDOWN", "5")),
                  swarm_node_max_rss_mb=150, swarm_stall_timeout=1.0)
    app.topic("t", consumer=Noop, backend="inline")
    return Supervisor(app, app.routes.select(None), nodes, listener_factory=FakeServer,  # type: ignore[arg-type]
                      node_setup=_announce).run()


def _announce(app: KBridge, index: int) -> None:
    logging.getLogger("fake").info("setup of node %d ran in pid %d", index, os.getpid())


SUBREAPER = r"""
import ctypes, os, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come to us
child = subprocess.Popen(sys.argv[1:])
print(f"subreaper: supervisor pid={child.pid}", flush=True)
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    print(f"subreaper: reaped pid={pid} code={os.waitstatus_to_exitcode(status)}", flush=True)
"""


@contextlib.contextmanager
def fake_swarm(nodes: int, mode: str = "", subreaper: bool = False, **env: str) -> Iterator[processes.Process]:
    marker = os.path.join(tempfile.mkdtemp(prefix="kbridge-swarm-"), "misbehaved")
    argv = [sys.executable, "-c", f"import sys; from tests.unit.test_swarm import supervise_fake; "
            f"sys.exit(supervise_fake({nodes}))"]
    if subreaper:
        argv = [sys.executable, "-c", SUBREAPER, *argv]
    proc = processes.Process("fake-swarm", argv, processes.child_env({"FAKE_MODE": mode, "FAKE_ONCE": marker, **env}))
    proc.start()
    try:
        wait_until(lambda: len(started(proc)) >= nodes, 30, what="nodes to start", alive=[proc])
        yield proc
    finally:
        proc.stop(10)
        for pid in started(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def started(proc: processes.Process) -> list[int]:
    return [int(pid) for pid in re.findall(r"node \d+ started \(pid (\d+)\)", proc.log())]


def test_sigterm_stops_every_node_and_exits_0() -> None:
    with fake_swarm(2) as proc:
        time.sleep(1.5)  # a report or two
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.log()
    assert "node exit codes {1: 0, 2: 0}; exiting with code 0" in proc.log()
    ran = [int(pid) for pid in re.findall(r"setup of node \d ran in pid (\d+)", proc.log())]
    assert sorted(ran) == sorted(started(proc)), "node_setup runs once in each node, after the fork"


def test_a_dead_node_is_restarted() -> None:
    with fake_swarm(2) as proc:
        os.kill(started(proc)[0], signal.SIGKILL)
        wait_until(lambda: len(started(proc)) == 3, 20, what="a restart", alive=[proc])
    assert "node 1 (pid" in proc.log() and "exited with signal SIGKILL" in proc.log()
    assert "node 1 started (pid" in proc.log().split("exited with signal SIGKILL")[1]


@pytest.mark.parametrize(("mode", "needle"), [
    ("hog", "over swarm_node_max_rss_mb=150"),
    ("stall", "consumer group fake_g: poll loop stalled for 100"),
])
def test_an_unhealthy_node_is_replaced(mode: str, needle: str) -> None:
    with fake_swarm(1, mode) as proc:
        wait_until(lambda: len(started(proc)) == 2, 30, what="the node to be replaced", alive=[proc])
    log = proc.log()
    assert needle in log and "replacing it (SIGTERM, then a restart)" in log
    assert re.search(r"node 1 \(pid \d+\) exited with code 0 after", log), log


def test_a_node_ignoring_sigterm_is_killed_after_shutdown_timeout() -> None:
    with fake_swarm(2, "stubborn", FAKE_SHUTDOWN="0.5") as proc:
        proc.wait_for_log("misbehaving: stubborn", 10)
        began = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == EXIT_SHUTDOWN_TIMEOUT
        took = time.monotonic() - began
    assert "after SIGTERM: SIGKILL" in proc.log() and 2.0 < took < 6.0, (took, proc.log())


def test_a_second_signal_kills_every_node_at_once() -> None:
    with fake_swarm(1, "stubborn", FAKE_SHUTDOWN="30") as proc:
        proc.wait_for_log("misbehaving: stubborn", 10)
        proc.signal(signal.SIGINT)
        proc.wait_for_log("stopping every node gracefully", 10)
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == EXIT_SHUTDOWN_TIMEOUT
    assert "SIGTERM received again: killing every node now" in proc.log()


def test_orphaned_nodes_stop_and_exit_3() -> None:
    with fake_swarm(2, subreaper=True) as proc:
        supervisor = int(re.findall(r"supervisor pid=(\d+)", proc.log())[0])
        os.kill(supervisor, signal.SIGKILL)
        proc.wait(20)
    reaped = {int(pid): int(code) for pid, code in re.findall(r"reaped pid=(\d+) code=(-?\d+)", proc.log())}
    assert [reaped.get(pid) for pid in started(proc)] == [EXIT_ORPHANED, EXIT_ORPHANED], proc.log()
