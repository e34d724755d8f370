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
from collections.abc import Mapping
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

STATE_LINES: dict[str, tuple[int, str]] = {
    "kafka.waiting": (
        logging.WARNING,
        "consumer group {group_id}: no Kafka broker reachable at {servers}; waiting for Kafka, retrying with backoff "
        "({error})",
    ),
    "kafka.connected": (logging.INFO, "consumer group {group_id}: connected to Kafka at {servers}"),
    "assignment.waiting": (
        logging.INFO, "consumer group {group_id} listening to {topics}: waiting for partition assignment"
    ),
    "rebalance.assigned": (logging.INFO, "group {group_id}: partitions assigned: {partitions}"),
    "rebalance.revoked": (logging.INFO, "group {group_id}: partitions revoked: {partitions}"),
    "kafka.lost": (
        logging.WARNING, "consumer group {group_id} lost Kafka: {error}; polling on, nothing is committed meanwhile"
    ),
    "kafka.restored": (logging.WARNING, "consumer group {group_id} reaches Kafka again"),
}

# Loggers of the Kafka client; at any level above DEBUG only their critical records show.
KAFKA_CLIENT_LOGGERS = ("kafka",)


def quiet_kafka_client(level: int) -> None:
    """kafka-python logs every refused connection, often with a traceback, many times a second while Kafka
    is down; kbridge reports the same as one state line. At DEBUG everything shows, for digging."""
    for name in KAFKA_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)


def _partitions(pairs: Any) -> str:
    return ", ".join(f"{topic}-{partition}" for topic, partition in pairs) or "none"


class LoggingListener:
    """LoggingListener().attach(app.monitor); events below the logger's level cost a dict lookup.

    Subscribing only to events whose line would be written keeps monitor.listens()
    false for the rest, so the listener's hot path does not build payloads for nothing.
    """

    def __init__(self, logger: logging.Logger | None = None,
                 lines: Mapping[str, tuple[int, str]] = LINES) -> None:
        self.logger = logger or logging.getLogger("kbridge.events")
        self.lines = lines

    @classmethod
    def states(cls) -> LoggingListener:
        """The listener's state lines (STATE_LINES), on logger kbridge.listener."""
        return cls(logging.getLogger("kbridge.listener"), STATE_LINES)

    def attach(self, monitor: Monitor) -> LoggingListener:
        for event, (level, _) in self.lines.items():
            if self.logger.isEnabledFor(level):
                monitor.subscribe(event, self)
        return self

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        level, line = self.lines[event]
        if not self.logger.isEnabledFor(level):
            return
        values = {**payload, "pid": os.getpid()}
        if "seconds" in payload:
            values["ms"] = payload["seconds"] * 1000.0
        if "partitions" in payload:
            values["partitions"] = _partitions(payload["partitions"])
        if isinstance(payload.get("topics"), (list, tuple)):
            values["topics"] = ", ".join(payload["topics"])
        self.logger.log(level, line.format(**values))
