"""Reports for `kbridge web`: listeners and workers publish their state to a Kafka topic the app owns.

Why Kafka and not the Celery broker: the dashboard then works the same whatever carries
the tasks (Redis, RabbitMQ), and a report is just another record any tool can read.
A listener sends one report every report_interval seconds from a thread of its own:
nothing is added to the poll loop. What the report says comes from the group
processors' counters, their held partitions, Monitor events (assignments, errors) and a
probe consumer that fetches once per interval from each partition the listener owns, because the
high watermark of a fetch response is the end offset every broker gets right (Tansu's
ListOffsets does not). Workers report each failed perform attempt as it happens.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from . import __version__
from .lag import committed_offsets
from .listener.controls import PAUSED_REASON, Controls
from .topics import admin_config, create_topics

if TYPE_CHECKING:
    from .config import Settings
    from .instrumentation import Monitor
    from .listener.processor import GroupProcessor

log = logging.getLogger("kbridge.reports")

# Events a report lists as the listener's recent errors.
ERROR_EVENTS = ("enqueue.failed", "filter.failed", "commit.failed", "dead_letter", "record.undecodable",
                "kafka.lost", "connect.failed", "partition.held")
RECENT_ERRORS = 20
# Seconds between looks at the commands topic: polling it without a pause kept a thread busy in kafka-python
# beside the polling threads, and a pause or resume can wait a second.
COMMAND_CHECK = 1.0
TRACEBACK_CHARS = 2000


def reports_topic(settings: Settings) -> str:
    """The Kafka name of the app's reports topic."""
    return settings.topic_mapper.outgoing(f"{settings.client_id}.kbridge.reports")


def commands_topic(settings: Settings) -> str:
    return settings.topic_mapper.outgoing(f"{settings.client_id}.kbridge.commands")


def ensure_topics(settings: Settings) -> None:
    """Create the reports and commands topics if missing (one partition each: order matters for commands)."""
    names = [f"{settings.client_id}.kbridge.reports", f"{settings.client_id}.kbridge.commands"]
    create_topics(settings, names, partitions=1, replication_factor=1)


def _producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(**{"acks": 1, "linger_ms": 0, **settings.producer_config()})


def _send(producer: KafkaProducer, topic: str, key: str, body: dict[str, Any]) -> None:
    producer.send(topic, key=key.encode(), value=json.dumps(body, default=str).encode())


class ListenerReporter:
    """The listener process's reporter: a thread that applies commands and publishes a report per interval."""

    def __init__(self, settings: Settings, processors: Sequence[GroupProcessor], controls: Controls,
                 monitor: Monitor) -> None:
        self.settings = settings
        self.processors = list(processors)
        self.controls = controls
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._assigned: dict[str, list[tuple[str, int]]] = {p.group.id: [] for p in self.processors}
        self._errors: deque[dict[str, Any]] = deque(maxlen=RECENT_ERRORS)
        self._highwater: dict[TopicPartition, int] = {}
        self._earliest: dict[TopicPartition, int] = {}
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._committed: dict[str, dict[str, int]] = {}  # group id -> the group's offsets, read by the admin client
        self._failing = False
        self.monitor = monitor
        # the bound methods themselves: unsubscribe() matches by identity, and each attribute access makes a new one
        self._subscribed = [("rebalance.assigned", self._on_assigned), ("rebalance.revoked", self._on_revoked),
                            *((event, self._on_error) for event in ERROR_EVENTS)]
        for event, fn in self._subscribed:
            monitor.subscribe(event, fn)

    # -- monitor subscribers (on the polling threads; quick) ------------------

    def _on_assigned(self, event: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self._assigned[payload["group_id"]] = list(payload["partitions"])

    def _on_revoked(self, event: str, payload: dict[str, Any]) -> None:
        gone = set(payload["partitions"])
        with self._lock:
            group = payload["group_id"]
            self._assigned[group] = [tp for tp in self._assigned.get(group, []) if tuple(tp) not in gone]

    def _on_error(self, event: str, payload: dict[str, Any]) -> None:
        if event == "partition.held" and payload.get("reason") == PAUSED_REASON:
            return  # an operator's pause is a state, shown as such, not an error
        self._errors.append({"at": time.time(), "event": event,
                             **{k: v if isinstance(v, (int, float, type(None))) else str(v)[:300]
                                for k, v in payload.items()}})

    # -- the thread ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kbridge-reporter", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and send a last report saying this listener stopped."""
        self._stop.set()
        for event, fn in self._subscribed:
            self.monitor.unsubscribe(event, fn)
        if self._thread is not None:
            self._thread.join(10)
        if self._producer is not None:
            try:
                _send(self._producer, reports_topic(self.settings), self.id, self.report(stopped=True))
                self._producer.flush(5)
            except KafkaError as exc:
                log.debug("last report not sent: %s", exc)
            self._producer.close(timeout=5)

    def _run(self) -> None:
        commands: KafkaConsumer | None = None
        probe: KafkaConsumer | None = None
        next_report = 0.0
        while not self._stop.is_set():
            try:
                if commands is None or probe is None or self._producer is None:
                    ensure_topics(self.settings)
                    self._producer = self._producer or _producer(self.settings)
                    commands = commands or self._commands_consumer()
                    probe = probe or self._probe()
                self._read_commands(commands)
                if time.monotonic() >= next_report:
                    self._probe_highwater(probe)
                    self._group_offsets()
                    _send(self._producer, reports_topic(self.settings), self.id, self.report())
                    next_report = time.monotonic() + self.settings.report_interval
                if self._failing:
                    log.warning("reports reach Kafka again")
                    self._failing = False
                self._stop.wait(COMMAND_CHECK)
            except Exception as exc:  # Kafka away: the listener goes on; reports resume with it
                if not self._failing:
                    log.warning("cannot report to Kafka (%s: %s); retrying", type(exc).__name__, exc)
                self._failing = True
                self._stop.wait(min(self.settings.report_interval, 5.0))
        for consumer in (commands, probe):
            if consumer is not None:
                consumer.close(autocommit=False)
        if self._admin is not None:
            self._admin.close()

    def _consumer(self, **extra: Any) -> KafkaConsumer:
        return KafkaConsumer(**{**self.settings.consumer_config(), "group_id": None, "enable_auto_commit": False,
                                "fetch_max_wait_ms": 100, **extra})

    def _commands_consumer(self) -> KafkaConsumer:
        consumer = self._consumer(auto_offset_reset="earliest")
        consumer.assign([TopicPartition(commands_topic(self.settings), 0)])
        return consumer

    def _probe(self) -> KafkaConsumer:
        """Fetches from this listener's partitions only to learn their high watermarks; records are dropped."""
        return self._consumer(auto_offset_reset="latest", max_partition_fetch_bytes=1024)

    def _read_commands(self, consumer: KafkaConsumer) -> None:
        for records in consumer.poll(timeout_ms=100, max_records=100).values():
            for record in records:
                try:
                    command = json.loads(record.value)
                except (TypeError, ValueError):
                    log.warning("ignored command at offset %d: not JSON", record.offset)
                    continue
                self.controls.apply(command)

    def _group_offsets(self) -> None:
        """The group's committed offsets, for partitions this listener has not committed itself yet
        (assigned, but nothing new arrived, or paused since the start)."""
        for processor in self.processors:
            known = processor.stats.committed_offsets
            with self._lock:
                assigned = self._assigned.get(processor.group.id, [])
            if all(f"{t}-{p}" in known for t, p in assigned):
                continue
            if self._admin is None:
                self._admin = KafkaAdminClient(**admin_config(self.settings))
            found = committed_offsets(self._admin, processor.group.id)
            self._committed[processor.group.id] = {f"{tp.topic}-{tp.partition}": o for tp, o in found.items()}

    def _probe_highwater(self, probe: KafkaConsumer) -> None:
        with self._lock:
            wanted = {TopicPartition(str(t), int(p)) for tps in self._assigned.values() for t, p in tps}
        if wanted != probe.assignment():
            probe.assign(sorted(wanted))  # follows rebalances: only partitions this listener reports on
        if not wanted:
            return
        for tp, mark in self._highwater.items():
            if tp in wanted:
                probe.seek(tp, mark)  # fetch only what arrived since: at most one small batch each
        probe.poll(timeout_ms=300, max_records=1)
        fresh = [tp for tp in probe.assignment() if tp not in self._earliest]
        if fresh:  # ListOffsets(EARLIEST) is right on every broker; the start of a group with no commit yet
            self._earliest.update(probe.beginning_offsets(fresh))
        for tp in probe.assignment():
            mark = probe.highwater(tp)
            if mark is not None:
                self._highwater[tp] = mark

    # -- the report ------------------------------------------------------------

    def report(self, stopped: bool = False) -> dict[str, Any]:
        groups = []
        for processor in self.processors:
            group_id = processor.group.id
            with self._lock:
                assigned = list(self._assigned.get(group_id, []))
            committed = {**self._committed.get(group_id, {}), **processor.stats.committed_offsets}
            held = {(tp.topic, tp.partition): reason for tp, reason in processor.held_reasons().items()}
            partitions = []
            from_start = all(r.start_from_beginning for r in processor.group.topics.values())
            for topic, partition in sorted((str(tp[0]), int(tp[1])) for tp in assigned):
                at = committed.get(f"{topic}-{partition}")
                mark = self._highwater.get(TopicPartition(topic, partition))
                reason = held.get((topic, partition))
                # no commit in the group yet: it starts at the earliest offset (or at the end, where nothing lags)
                start = at if at is not None else self._earliest.get(TopicPartition(topic, partition)) \
                    if from_start else mark
                paused = self.controls.is_paused(group_id, topic, partition)
                partitions.append({
                    "topic": topic, "partition": partition, "committed": at, "highwater": mark,
                    "lag": None if start is None or mark is None else max(0, mark - start),
                    "state": "paused" if paused else "held" if reason else "flowing",
                    "reason": reason,
                })
            s = processor.stats
            groups.append({
                "group_id": group_id, "topics": sorted(processor.group.topics), "partitions": partitions,
                "counters": {"fetched": s.fetched, "enqueued": s.enqueued, "filtered": s.filtered,
                             "dead_lettered": s.dead_lettered},
            })
        return {
            "kind": "listener", "id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
            "client_id": self.settings.client_id, "version": __version__, "started_at": self.started_at,
            "at": time.time(), "interval": self.settings.report_interval, "stopped": stopped,
            "groups": groups, "errors": list(self._errors), "paused": self.controls.snapshot(),
            "acked": self.controls.take_acks(),
        }


class FailureReporter:
    """A worker's perform failures, one record each, sent without waiting (a report never slows a task)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._pid = 0

    def attach(self, monitor: Monitor) -> None:
        monitor.subscribe("perform.failed", self._on_failed)

    def _on_failed(self, event: str, payload: dict[str, Any]) -> None:
        # Emitted inside the except block around perform(): the exception being handled is this one.
        excerpt = "".join(traceback.format_exception(*sys.exc_info())[-6:]) if sys.exc_info()[0] else ""
        error = str(payload.get("error", ""))
        report = {
            "kind": "failure", "at": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
            "route": payload.get("route"), "group_id": payload.get("group_id"), "topic": payload.get("topic"),
            "partition": payload.get("partition"), "offset": payload.get("offset"),
            "attempt": payload.get("attempt"), "error_class": error.split(":", 1)[0],
            "error": error[:500], "traceback": excerpt[-TRACEBACK_CHARS:],
        }
        try:
            if self._producer is None or self._pid != os.getpid():  # a fresh producer after the pool forks
                self._producer, self._pid = _producer(self.settings), os.getpid()
            _send(self._producer, reports_topic(self.settings), f"failure:{report['route']}", report)
        except KafkaError as exc:
            log.warning("failure report not sent to Kafka: %s: %s", type(exc).__name__, exc)
