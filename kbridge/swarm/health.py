"""What a node reports to its supervisor, and the supervisor's verdict on it.

A node writes one JSON line per REPORT_INTERVAL to a pipe: its resident memory
and, per consumer group, how long ago its poll loop last turned. The supervisor
judges (verdict()) in one place, so the policy is testable without processes:
a node is replaced when it is silent past swarm_silence_timeout, over
swarm_node_max_rss_mb, or has a poll loop stalled past swarm_stall_timeout.
"""

from __future__ import annotations

import json
import os
import resource
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings

REPORT_INTERVAL = 1.0  # seconds between a node's reports
MAX_REPORT_BYTES = 4096  # under PIPE_BUF, so a report is written to the pipe in one piece


@dataclass(frozen=True)
class Report:
    """One node's health facts. loop_age: group id -> seconds since its loop last turned (None: not polling yet)."""

    node: int
    pid: int
    rss_mb: float
    loop_age: dict[str, float | None] = field(default_factory=dict)
    stopping: bool = False

    def encode(self) -> bytes:
        data = {"node": self.node, "pid": self.pid, "rss_mb": round(self.rss_mb, 1),
                "loop_age": {g: (None if a is None else round(a, 2)) for g, a in self.loop_age.items()},
                "stopping": self.stopping}
        line = json.dumps(data, separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_REPORT_BYTES:  # very many groups: keep the worst one only
            worst = max(self.loop_age.items(), key=lambda kv: kv[1] or 0.0)
            return Report(self.node, self.pid, self.rss_mb, dict([worst]), self.stopping).encode()
        return line

    @classmethod
    def decode(cls, line: bytes) -> Report | None:
        """None for anything that is not a well-formed report (a node is judged silent rather than crash us)."""
        try:
            data: Any = json.loads(line)
            ages = {str(g): (None if a is None else float(a)) for g, a in data["loop_age"].items()}
            return cls(int(data["node"]), int(data["pid"]), float(data["rss_mb"]), ages, bool(data["stopping"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


@dataclass(frozen=True)
class Limits:
    silence: float
    stall: float
    max_rss_mb: int | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.swarm_silence_timeout, settings.swarm_stall_timeout, settings.swarm_node_max_rss_mb)


def verdict(report: Report | None, silent_for: float, limits: Limits) -> str | None:
    """Why this node must be replaced, or None while it is healthy.

    silent_for counts from the last report, or from the fork while there is none, so a
    node that never reports at all (stuck importing, deadlocked) is replaced too.
    """
    if silent_for > limits.silence:
        return f"silent for {silent_for:.0f}s (swarm_silence_timeout={limits.silence:g}s)"
    if report is None or report.stopping:
        return None
    if limits.max_rss_mb is not None and report.rss_mb > limits.max_rss_mb:
        return f"RSS {report.rss_mb:.0f} MB over swarm_node_max_rss_mb={limits.max_rss_mb}"
    for group, age in sorted(report.loop_age.items()):
        if age is not None and age > limits.stall:
            return f"consumer group {group}: poll loop stalled for {age:.0f}s (swarm_stall_timeout={limits.stall:g}s)"
    return None


def rss_mb() -> float:
    """This process's resident memory now, from /proc; peak RSS where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
