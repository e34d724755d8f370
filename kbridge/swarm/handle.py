"""A forked node as the supervisor sees it: signal it, notice its exit, reap it.

Linux's pidfd (os.pidfd_open, Python 3.9+, kernel 5.3+) gives a descriptor that
becomes readable when the process exits, so the supervisor's select() wakes at
once, and signals sent through it can never hit a recycled pid. Elsewhere the
plain pid is used; a child's pid cannot be recycled before we reap it, and the
supervisor's SIGCHLD handler wakes select() instead.
"""

from __future__ import annotations

import contextlib
import os
import signal


class NodeHandle:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd: int | None = None
        self.returncode: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):  # ENOSYS on old kernels, EPERM under some sandboxes
                self.pidfd = os.pidfd_open(pid)

    def send(self, sig: int) -> bool:
        """Signal the node; False when it has already exited."""
        if self.returncode is not None:
            return False
        try:
            if self.pidfd is not None and hasattr(signal, "pidfd_send_signal"):
                signal.pidfd_send_signal(self.pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def poll(self) -> int | None:
        """Reap the node if it exited: its exit code (negative: killed by that signal), else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere; the code is unknown
                pid, status = self.pid, 255 << 8
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def close(self) -> None:
        """Release the pidfd; the supervisor first takes it out of its selector."""
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None


def describe(code: int) -> str:
    """An exit code for log lines: "code 3", or "signal SIGKILL"."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
