"""Dead letters from the dashboard: which topics it may read, chosen letters, and skipping a range.

Replay itself is `kbridge dlq replay` (kbridge.replay), called as it is, and a replay of
chosen letters is kbridge.replay_selection: both write only to topics the app routes.
Skipping commits past a range in the same replay group, so the next replay starts after
it; the letters stay in the topic.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from ..app import KBridge
from ..errors import KBridgeError
from ..replay_selection import MAX_SELECTION, Selection, select
from ..routing.mapper import kafka_names

JOIN_TIMEOUT = 30.0


def dead_letter_topics(app: KBridge) -> list[str]:
    """The Kafka names of the app's dead-letter topics: the only topics the dashboard reads letters from."""
    return sorted(set(kafka_names(app.settings.topic_mapper, {r.dead_letter_topic for r in app.routes})))


def skip(app: KBridge, topic: str, partition: int, until: int) -> int:
    """Commit offset until+1 of topic-partition in the replay group; the offset it was at before (None: none)."""
    settings = app.settings
    consumer = KafkaConsumer(**{**settings.consumer_config(), "group_id": f"{settings.client_id}_dlq_replay",
                                "enable_auto_commit": False, "auto_offset_reset": "earliest"})
    tp = TopicPartition(topic, partition)
    try:
        if partition not in (consumer.partitions_for_topic(topic) or set()):
            raise KBridgeError(f"{topic!r} has no partition {partition}")
        consumer.subscribe([topic])  # a commit from inside the group: some brokers drop one from outside
        deadline = time.monotonic() + JOIN_TIMEOUT
        while tp not in consumer.assignment():
            if time.monotonic() > deadline:
                raise KBridgeError(f"could not join the replay group for {topic!r} within {JOIN_TIMEOUT:.0f}s; "
                                   "is a replay running?")
            consumer.poll(timeout_ms=200, max_records=1)
        before = consumer.committed(tp) or 0
        if until + 1 <= before:
            raise KBridgeError(f"the replay group is at offset {before} of {topic}-{partition} already; "
                               f"nothing below it to skip")
        consumer.commit({tp: OffsetAndMetadata(until + 1, "", -1)})
        return before
    finally:
        consumer.close(autocommit=False)


def chosen(body: Any) -> tuple[Selection, bool]:
    """(selection, force) from {"letters": [{"partition": P, "offset": O}, ...], "force": false}."""
    letters = body.get("letters") if isinstance(body, dict) else None
    if not isinstance(letters, list):
        raise KBridgeError('the body must be {"letters": [{"partition": P, "offset": O}, ...]}')
    if len(letters) > MAX_SELECTION:
        raise KBridgeError(f"{len(letters)} letters chosen; at most {MAX_SELECTION} at once (use Replay all)")
    pairs = []
    for item in letters:
        if not (isinstance(item, dict) and all(_count(item.get(k)) for k in ("partition", "offset"))):
            raise KBridgeError(f"each letter must be {{\"partition\": P, \"offset\": O}} (integers >= 0), "
                               f"got {str(item)[:60]!r}")
        pairs.append((item["partition"], item["offset"]))
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise KBridgeError("force must be true or false")
    return select(pairs), force


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
