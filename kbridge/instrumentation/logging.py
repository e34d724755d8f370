"""Activity log lines from events, with the standard logging module (logger "kbridge.events").

kbridge already logs every failure and state change itself (loggers kbridge.listener,
kbridge.worker, kbridge.dlq, kbridge.perform): pauses, retries, dead letters, rebalances,
signals. What those do not show is the steady work, and this listener adds it: at INFO,
the lifecycle and one line per enqueued partition batch (never one per message, so a
busy listener writes a few lines per poll, not thousands); at DEBUG, fetches, filtered
messages, commits and performs. Celery logs each task's outcome itself.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .monitor import Monitor

# event -> (level, format); the format reads the payload's keys.
LINES: dict[str, tuple[int, str]] = {
    "app.started": (logging.INFO, "{process} {client_id} started (pid {pid})"),
    "app.stopping": (logging.INFO, "{process} {client_id} stopping"),
    "app.stopped": (logging.INFO, "{process} {client_id} stopped, exit code {exit_code}"),
    "enqueue": (logging.INFO, "{group_id}: enqueued {messages} message(s) of {topic}-{partition} in {ms:.1f}ms"),
    "fetch": (logging.DEBUG, "{group_id}: fetched {messages} message(s) of {topic}-{partition}, lag {lag}"),
    "filter.rejected": (logging.DEBUG, "{group_id}: filtered out {topic}-{partition}@{offset}"),
    "commit": (logging.DEBUG, "{group_id}: committed {offsets}"),
    "perform.started": (logging.DEBUG, "{route} {topic}-{partition}@{offset} ({messages}): attempt {attempt}"),
    "perform.finished": (
        logging.DEBUG, "{route} {topic}-{partition}@{offset} ({messages}): attempt {attempt} done in {ms:.1f}ms"
    ),
}


class LoggingListener:
    """LoggingListener().attach(app.monitor); events below the logger's level cost a dict lookup.

    Subscribing only to events whose line would be written keeps monitor.listens()
    false for the rest, so the listener's hot path does not build payloads for nothing.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("kbridge.events")

    def attach(self, monitor: Monitor) -> LoggingListener:
        for event, (level, _) in LINES.items():
            if self.logger.isEnabledFor(level):
                monitor.subscribe(event, self)
        return self

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        level, line = LINES[event]
        if not self.logger.isEnabledFor(level):
            return
        values = {**payload, "pid": os.getpid()}
        if "seconds" in payload:
            values["ms"] = payload["seconds"] * 1000.0
        self.logger.log(level, line.format(**values))
