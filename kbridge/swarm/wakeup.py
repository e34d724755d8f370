"""Signals as data for the supervisor's select() loop.

The handlers only record the signal's name; a wake-up pipe (signal.set_wakeup_fd)
makes select() return at once, and the loop acts on what was recorded. Nothing
runs inside a handler, so a signal can never interrupt the supervisor halfway
through a fork or a restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType
from typing import Any

from .codes import STOP_SIGNALS


class Wakeup:
    def __init__(self) -> None:
        self.received: list[str] = []  # names of the stop signals, in order
        self.fds: tuple[int, int] | None = None
        self._previous: dict[int, Any] = {}
        self._previous_wakeup_fd = -1

    def install(self) -> int:
        """Install the handlers (main thread only); the descriptor to select() on."""
        read_fd, write_fd = os.pipe()
        for fd in (read_fd, write_fd):
            os.set_blocking(fd, False)
        self.fds = (read_fd, write_fd)
        self._previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_stop)
        # Without pidfds, a node's exit wakes select() through SIGCHLD and the wake-up pipe.
        self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore)
        return read_fd

    def drain(self) -> None:
        if self.fds is not None:
            with contextlib.suppress(OSError):
                os.read(self.fds[0], 4096)

    def restore(self) -> None:
        """Put back the handlers found at install(), and close the pipe."""
        if self.fds is None:
            return
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = None

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD needs a handler (not SIG_IGN, which would auto-reap nodes) for the wake-up byte to be written."""
