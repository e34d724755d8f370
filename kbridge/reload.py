"""`--reload` for `kbridge listen` and `kbridge worker`: a development loop, never for production.

The command runs again as a child process, started exactly as this one was (sys.orig_argv),
and is restarted when a Python file of the project changes. A restart is the child's
graceful stop (SIGTERM, then waiting for it), so the listener commits only what it
handed over, the Celery worker finishes or requeues its tasks, and nothing is lost. The
new child is started as the old one is told to stop, so that its imports overlap the stop.

This process never imports the app: code that fails to import only stops the child,
and the next save starts it again.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import runpy
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType, ModuleType

from .errors import KBridgeError

log = logging.getLogger("kbridge.reload")

CHILD_ENV = "KBRIDGE_RELOAD_CHILD"  # set in the child, whose --reload then means nothing
STOP_TIMEOUT = 60.0  # seconds a child may take to stop gracefully before it is killed
CHECK_INTERVAL_MS = 500


def in_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


def watched_paths(app_spec: str | None, cwd: Path) -> list[Path]:
    """The project directory, and the app's top-level package when it lives elsewhere (an editable install).

    The app's module is only located, not imported.
    """
    paths = [cwd.resolve()]
    top = (app_spec or "").partition(":")[0].split(".")[0]
    if top:
        sys.path.insert(0, str(cwd))
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        finally:
            sys.path.remove(str(cwd))
        if spec is not None and spec.origin and spec.origin not in ("built-in", "frozen"):
            origin = Path(spec.origin).resolve()
            where = origin.parent if spec.submodule_search_locations else origin
            if not any(where.is_relative_to(p) for p in paths) and "site-packages" not in where.parts:
                paths.append(where)
    return paths


def child_argv() -> list[str]:
    """This process's command line, run by this interpreter: `kbridge ...`, `python -m kbridge ...`, manage.py."""
    return [sys.executable, *sys.orig_argv[1:]]


def spare_argv(argv: Sequence[str]) -> list[str] | None:
    """argv run by a spare (see _Child), or None for a command line the spare cannot replay (interpreter flags)."""
    rest = list(argv[1:])
    if not rest or (rest[0].startswith("-") and rest[0] != "-m") or (rest[0] == "-m" and len(rest) < 2):
        return None
    return [argv[0], "-m", "kbridge.reload", *rest]


def _watchfiles() -> ModuleType:
    try:
        import watchfiles
    except ImportError:
        raise KBridgeError(
            "--reload needs the watchfiles package: pip install 'kbridge[reload]' (or pip install watchfiles)"
        ) from None
    return watchfiles


class _Child:
    """A child command, told to stop at most once: a second SIGTERM makes a listener or a worker stop at once.

    A spare child imports kbridge, kafka-python and Celery, then waits for go() before it imports the app
    and runs the command: a restart then costs the app's import, not the interpreter's start-up.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        spare = spare_argv(argv)
        # A session of its own: a terminal's Ctrl-C reaches the reloader only, which stops the child once.
        self.proc = subprocess.Popen(spare or list(argv), env=env, start_new_session=True,
                                     stdin=subprocess.PIPE if spare else subprocess.DEVNULL)
        self.terminated = False

    def go(self) -> _Child:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b"go\n")
                self.proc.stdin.close()
            except OSError:
                pass  # it died while waiting; the watch loop reports its exit code
        return self

    def terminate(self) -> None:
        if not self.terminated and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.terminated = True

    def stop(self, command: str, timeout: float) -> int:
        """SIGTERM and wait: the graceful stop that commits what is safe (listener) or finishes tasks (worker)."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0fs of SIGTERM; killing it", command, timeout)
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


PRELOAD = ("kbridge.cli", "kbridge.listener", "kbridge.runtime", "kbridge.instrumentation.wiring", "celery")


def _spare_main(argv: list[str]) -> None:
    """python -m kbridge.reload SCRIPT ARGS... | -m MODULE ARGS...: preload, wait for go, then run the command."""
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    if sys.stdin.readline() != "go\n":
        return  # the reloader stopped before this spare was needed
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


def run(command: str, paths: Sequence[Path], argv: Sequence[str] | None = None,
        stop_timeout: float = STOP_TIMEOUT) -> int:
    """Run argv (default: this command again) until SIGINT/SIGTERM, restarting it on .py changes under paths.

    Returns the exit code of the last child.
    """
    watchfiles = _watchfiles()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping %s", signal.Signals(signum).name, command)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    env = {**os.environ, CHILD_ENV: "1"}
    argv = list(argv or child_argv())
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every batch of changes at INFO
    log.info("reloading %s on changes to Python files under %s", command, ", ".join(map(str, paths)))
    warm = spare_argv(argv) is not None

    def spare() -> _Child | None:
        return _Child(argv, env) if warm else None

    try:
        child, next_child = _Child(argv, env).go(), spare()
        while True:
            changed = _watch(watchfiles, paths, child.proc, stop, command)
            if not changed or stop.is_set():
                if next_child is not None:
                    next_child.stop(command, stop_timeout)
                return child.stop(command, stop_timeout)
            log.info("%s changed: restarting %s", _names(changed), command)
            child.terminate()
            # The next one starts while the old one stops: its start-up overlaps the old one's graceful stop
            # (a listener leaves its group within moments; a second one joining meanwhile is a plain rebalance).
            successor = (next_child or _Child(argv, env)).go()
            next_child = spare()
            code = child.stop(command, stop_timeout)
            log.info("the previous %s stopped with code %d", command, code)
            child = successor
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _watch(watchfiles: ModuleType, paths: Sequence[Path], child: subprocess.Popen[bytes], stop: threading.Event,
           command: str) -> set[str]:
    """The changed files, or an empty set once asked to stop. A child that exits waits here for a change."""
    announced = False
    for changes in watchfiles.watch(
        *paths, watch_filter=watchfiles.PythonFilter(), stop_event=stop,
        yield_on_timeout=True, rust_timeout=CHECK_INTERVAL_MS, raise_interrupt=False,
    ):
        if changes:
            return {path for _, path in changes}
        if child.poll() is not None and not announced:
            announced = True
            log.warning("%s exited with code %d; it starts again when a Python file changes",
                        command, child.returncode)
    return set()


def _names(paths: Iterable[str]) -> str:
    names = sorted(Path(p).name for p in paths)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


if __name__ == "__main__":
    _spare_main(sys.argv[1:])
