"""Pause and resume commands from `kbridge web`, as the set of paused partitions they add up to.

Every listener of the app reads the whole commands topic, so each one knows every pause:
a paused partition that a rebalance moves to another listener stays paused there. A
command is only data from a topic: it is checked strictly, and one that does not fit is
ignored with a log line, never applied in part.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

log = logging.getLogger("kbridge.listener")

PAUSED_REASON = "paused from kbridge web"
ACTIONS = ("pause", "resume")


def command_problem(command: Any) -> str | None:
    """Why command is not a pause/resume command, or None."""
    if not isinstance(command, dict):
        return "not a JSON object"
    if command.get("action") not in ACTIONS:
        return f"action must be one of {', '.join(ACTIONS)}"
    for key in ("id", "group_id", "topic"):
        if not isinstance(command.get(key), str) or not command[key]:
            return f"{key} must be a non-empty string"
    partition = command.get("partition")
    if partition is not None and not (isinstance(partition, int) and not isinstance(partition, bool)
                                      and partition >= 0):
        return "partition must be an integer >= 0, or null for every partition of the topic"
    return None


class Controls:
    """The paused partitions (Kafka topic names) of this app, and the commands applied since the last report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (group_id, topic) -> partitions paused, or None: the whole topic
        self._paused: dict[tuple[str, str], set[int] | None] = {}
        self._acked: deque[str] = deque(maxlen=200)

    def apply(self, command: Any) -> bool:
        """Apply one command read from the commands topic; False (logged) if it is malformed."""
        problem = command_problem(command)
        if problem is not None:
            log.warning("ignored a command from the commands topic: %s", problem)
            return False
        key, partition = (command["group_id"], command["topic"]), command.get("partition")
        with self._lock:
            current = self._paused.get(key, set())
            if command["action"] == "pause":
                if partition is None:
                    self._paused[key] = None
                elif current is not None:
                    self._paused[key] = current | {partition}
            elif partition is None or current is None:
                self._paused.pop(key, None)  # resuming one partition of a paused topic resumes the topic
            else:
                rest = current - {partition}
                if rest:
                    self._paused[key] = rest
                else:
                    self._paused.pop(key, None)
            self._acked.append(command["id"])
        return True

    def is_paused(self, group_id: str, topic: str, partition: int) -> bool:
        """Read on the polling thread, per fetched partition batch: one dict lookup."""
        if not self._paused:
            return False
        found = self._paused.get((group_id, topic), set())
        return found is None or partition in found

    def take_acks(self) -> list[str]:
        with self._lock:
            acked = list(self._acked)
            self._acked.clear()
        return acked

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._paused.items())
        return [
            {"group_id": g, "topic": t, "partitions": None if parts is None else sorted(parts)}
            for (g, t), parts in sorted(items, key=lambda item: item[0])
        ]
