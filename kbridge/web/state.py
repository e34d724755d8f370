"""What the dashboard knows: the reports of the last hour, read from the reports topic into memory.

Listener state, charts and errors all come from these reports, so the dashboard needs no
access to the Celery broker and shows the same over Redis or RabbitMQ. A listener whose
last report is older than report_timeout (or that said it stopped) is shown as gone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from ..config import Settings
from ..reports import ensure_topics, reports_topic

log = logging.getLogger("kbridge.web")

HISTORY_SECONDS = 3600.0
MAX_FAILURES = 500
MAX_COMMANDS = 1000  # command ids whose acknowledgements are kept


class ReportStore:
    """Reports in memory; add() is called by the reader thread, the rest by request handlers."""

    def __init__(self, timeout: float, history: float = HISTORY_SECONDS) -> None:
        self.timeout = timeout
        self.history = history
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, Any]] = {}  # listener id -> its last report
        self._samples: deque[dict[str, Any]] = deque()  # every listener report of the last hour
        self._failures: deque[dict[str, Any]] = deque(maxlen=MAX_FAILURES)
        self._acked: dict[str, list[str]] = {}  # command id -> listener ids that applied it

    def add(self, report: Any, now: float | None = None) -> None:
        if not isinstance(report, dict) or not isinstance(report.get("at"), (int, float)):
            return
        now = time.time() if now is None else now
        if report["at"] < now - self.history:
            return
        with self._lock:
            if report.get("kind") == "failure":
                self._failures.append(report)
            elif report.get("kind") == "listener" and isinstance(report.get("id"), str):
                self._latest[report["id"]] = report
                self._samples.append(report)
                for command_id in report.get("acked") or []:
                    self._acked.setdefault(str(command_id), []).append(report["id"])
            while self._samples and self._samples[0]["at"] < now - self.history:
                self._samples.popleft()
            for old in [i for i, r in self._latest.items() if float(r["at"]) < now - self.history]:
                del self._latest[old]  # gone for an hour: no longer listed
            while len(self._acked) > MAX_COMMANDS:
                del self._acked[next(iter(self._acked))]

    def alive(self, report: dict[str, Any], now: float) -> bool:
        return not report.get("stopped") and now - float(report["at"]) <= self.timeout

    def listeners(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        with self._lock:
            latest = list(self._latest.values())
        rows = []
        for r in sorted(latest, key=lambda r: str(r["id"])):
            groups = r.get("groups") or []
            rows.append({
                "id": r["id"], "host": r.get("host"), "pid": r.get("pid"), "version": r.get("version"),
                "alive": self.alive(r, now), "stopped": bool(r.get("stopped")), "last_report": r["at"],
                "seconds_since": round(now - float(r["at"]), 1),
                "groups": [g.get("group_id") for g in groups],
                "partitions": sum(len(g.get("partitions") or []) for g in groups),
                "counters": _sum_counters(groups), "errors": list(r.get("errors") or [])[-5:],
                "paused": r.get("paused") or [],
            })
        return rows

    def overview(self, now: float | None = None) -> dict[str, Any]:
        listeners = self.listeners(now)
        alive = [row for row in listeners if row["alive"]]
        partitions = [p for g in self.groups(now) for p in g["partitions"]]
        totals = {"fetched": 0, "enqueued": 0, "filtered": 0, "dead_lettered": 0}
        for row in alive:
            for key in totals:
                totals[key] += int(row["counters"].get(key, 0))
        lags = [p["lag"] for p in partitions if p["lag"] is not None]
        return {
            "listeners_alive": len(alive), "listeners_gone": len(listeners) - len(alive),
            "partitions": len(partitions), "lag": sum(lags), "paused": sum(p["state"] == "paused" for p in partitions),
            "held": sum(p["state"] == "held" for p in partitions), "totals": totals,
            "failures": len(self._failures), "listeners": listeners,
        }

    def groups(self, now: float | None = None) -> list[dict[str, Any]]:
        """Per consumer group, each partition as its current owner (a live listener) last reported it."""
        now = time.time() if now is None else now
        with self._lock:
            latest = [r for r in self._latest.values() if self.alive(r, now)]
        found: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
        for r in sorted(latest, key=lambda r: float(r["at"])):  # newer reports win a partition
            for g in r.get("groups") or []:
                parts = found.setdefault(str(g.get("group_id")), {})
                for p in g.get("partitions") or []:
                    parts[(str(p["topic"]), int(p["partition"]))] = {**p, "listener": r["id"]}
        return [{"group_id": gid, "partitions": [parts[k] for k in sorted(parts)]}
                for gid, parts in sorted(found.items())]

    def chart(self, group_id: str, now: float | None = None, bucket: float = 5.0) -> dict[str, Any]:
        """Lag per partition and messages fetched per second, in buckets of `bucket` seconds, over the hour."""
        now = time.time() if now is None else now
        with self._lock:
            samples = list(self._samples)
        lag: dict[str, dict[float, int]] = {}
        rate: dict[float, float] = {}
        previous: dict[str, tuple[float, int]] = {}
        for r in samples:
            slot = round(float(r["at"]) // bucket * bucket, 3)
            for g in r.get("groups") or []:
                if g.get("group_id") != group_id:
                    continue
                for p in g.get("partitions") or []:
                    if p.get("lag") is not None:
                        lag.setdefault(f"{p['topic']}-{p['partition']}", {})[slot] = int(p["lag"])
                fetched = int((g.get("counters") or {}).get("fetched", 0))
                before = previous.get(r["id"])
                if before is not None and float(r["at"]) > before[0] and fetched >= before[1]:
                    rate[slot] = rate.get(slot, 0.0) + (fetched - before[1]) / (float(r["at"]) - before[0])
                previous[r["id"]] = (float(r["at"]), fetched)
        return {
            "group_id": group_id, "bucket": bucket, "now": now,
            "lag": {name: sorted(points.items()) for name, points in sorted(lag.items())},
            "throughput": sorted(rate.items()),
        }

    def failures(self, route: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = list(self._failures)
        return [f for f in reversed(found) if route is None or f.get("route") == route]

    def acked_by(self, command_id: str) -> list[str]:
        with self._lock:
            return list(self._acked.get(command_id, []))


def _sum_counters(groups: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for g in groups:
        for key, value in (g.get("counters") or {}).items():
            totals[key] = totals.get(key, 0) + int(value)
    return totals


class ReportReader:
    """A thread that reads the reports topic from its start into a ReportStore, for as long as the server runs."""

    def __init__(self, settings: Settings, store: ReportStore) -> None:
        self.settings = settings
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kbridge-web-reports", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    ensure_topics(self.settings)
                    consumer = KafkaConsumer(**{**self.settings.consumer_config(), "group_id": None,
                                                "enable_auto_commit": False, "auto_offset_reset": "earliest",
                                                "fetch_max_wait_ms": 200})
                    consumer.assign([TopicPartition(reports_topic(self.settings), 0)])
                for records in consumer.poll(timeout_ms=500, max_records=1000).values():
                    for record in records:
                        try:
                            self.store.add(json.loads(record.value))
                        except (TypeError, ValueError):
                            log.warning("ignored a report at offset %d: not JSON", record.offset)
            except Exception as exc:
                log.warning("cannot read reports from Kafka (%s: %s); retrying", type(exc).__name__, exc)
                if consumer is not None:
                    consumer.close(autocommit=False)
                    consumer = None
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close(autocommit=False)
