"""Rebuilds a task the broker lost from the messages Kafka still holds: the ledger keeps coordinates only.

This runs rarely (a task lost in kombu's delivery window), on the listener's polling
thread, with a consumer of its own that joins no group and commits nothing.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, TopicPartition

from ...errors import UnknownRouteError
from ...interchange import params_from_record, to_wire
from ...routing.pack import task_time_limits
from .ledger import Entry
from .task import HARD_LIMIT_GRACE, TASK_NAME

if TYPE_CHECKING:
    from ...config import Settings
    from ...routing import RouteTable

log = logging.getLogger("kbridge.ledger")

READ_TIMEOUT = 3.0  # seconds to read one task's messages (on the polling thread) before a later pass


class KafkaRefetch:
    def __init__(self, settings: Settings, routes: RouteTable) -> None:
        self.settings, self.routes = settings, routes
        self._consumer: KafkaConsumer | None = None

    def __call__(self, entry: Entry) -> tuple[str, str, list[Any], float, float] | None:
        """The task of entry, rebuilt; None when this listener does not route it (another app's listener may).
        Raises when Kafka cannot be read now, so the entry is tried again later."""
        try:
            route = self.routes.find(entry.route_id)
        except UnknownRouteError:
            return None
        records = self._read(TopicPartition(entry.topic, entry.partition), entry.offsets)
        gone = sorted(set(entry.offsets) - {r.offset for r in records})
        if gone:
            log.error("%d message(s) of a lost task of %s are no longer in Kafka (%s-%d@%s; retention or "
                      "compaction removed them): they cannot be re-queued", len(gone), route.shadow, entry.topic,
                      entry.partition, ",".join(map(str, gone[:20])))
        if not records:
            raise LookupError(f"none of {entry.topic}-{entry.partition}@{entry.offsets[0]}.. is left in Kafka")
        received = time.time() * 1000.0
        messages = [to_wire(params_from_record(r, route.deserializer, received)) for r in records]
        hard, soft = task_time_limits(route, HARD_LIMIT_GRACE)
        return TASK_NAME, route.shadow, [route.route_id, messages], hard, soft

    def _read(self, tp: TopicPartition, offsets: tuple[int, ...]) -> list[Any]:
        wanted, last = set(offsets), max(offsets)
        consumer = self._open()
        consumer.assign([tp])
        consumer.seek(tp, min(offsets))
        found: list[Any] = []
        deadline = time.monotonic() + READ_TIMEOUT
        try:
            while time.monotonic() < deadline:
                records = consumer.poll(timeout_ms=200).get(tp, [])
                for record in records:
                    if record.offset in wanted:
                        found.append(record)
                    if record.offset >= last:
                        return found
                end = consumer.highwater(tp)  # from fetch responses (ListOffsets is not trusted for this)
                if consumer.position(tp) > last or (not records and end is not None and consumer.position(tp) >= end):
                    return found  # the rest was compacted away, or is past the log's end (a recreated topic)
            raise TimeoutError(f"could not read {tp.topic}-{tp.partition}@{min(offsets)}..{last} from Kafka "
                               f"within {READ_TIMEOUT:g}s")
        finally:
            consumer.assign([])

    def _open(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                **{"bootstrap_timeout_ms": 5000, **self.settings.consumer_config()}, group_id=None,
                enable_auto_commit=False, auto_offset_reset="earliest", allow_auto_create_topics=False,
            )
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
