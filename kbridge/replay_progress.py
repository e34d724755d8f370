"""Replay's progress line: on a terminal only, so pipes, logs and scripts see just the summary."""

from __future__ import annotations

import sys
from typing import TextIO

from .replay import ReplayResult


class Progress:
    def __init__(self, dlq_topic: str, out: TextIO | None) -> None:
        self.dlq_topic = dlq_topic
        self.out = out  # None: not a terminal, nothing is drawn
        self._drawn = 0

    @classmethod
    def on_terminal(cls, dlq_topic: str) -> Progress:
        return cls(dlq_topic, sys.stdout if sys.stdout.isatty() else None)

    def __call__(self, result: ReplayResult) -> None:
        if self.out is None:
            return
        of = "" if result.total is None else f"/{result.total}"
        line = f"{self.dlq_topic}: {result.handled}{of} letters, {result.replayed} replayed, {result.skipped} skipped"
        self.out.write("\r" + line.ljust(self._drawn))
        self.out.flush()
        self._drawn = len(line)

    def clear(self) -> None:
        """Wipe the line, so the summary that follows starts on a clean one."""
        if self.out is not None and self._drawn:
            self.out.write("\r" + " " * self._drawn + "\r")
            self.out.flush()
            self._drawn = 0
