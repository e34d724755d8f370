"""Replay chosen dead letters, named by partition and offset, the way `kbridge dlq replay` sends one.

Each letter goes through the same Sender as a full replay (kbridge/replay.py): only to an
origin topic the app routes (or to `--to`), kbridge's own headers dropped, kbridge-replays
counted up, and a letter replayed --max-replays times skipped unless forced.

It reads the letters without a consumer group and commits nothing, so the replay group's
position does not move: a later full replay (`kbridge dlq replay`, "Replay all") that has
not passed these letters yet sends them again. Marking them instead would need state of
its own that a full replay trusts, which anyone who can write to Kafka could forge; so
the rule stays simple, and an operator who wants them never sent again skips past them
in the replay group ("Skip up to here").

The whole selection is checked before anything is sent: a partition the topic lacks, or
an offset below its earliest or at or past its end, refuses the request with a message
naming it. An offset inside the range that holds no letter (a compacted record, a
transaction marker) is skipped and counted, like any letter replay cannot send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from .config import Settings
from .errors import KBridgeError
from .highwater import high_watermarks, partitions_of
from .replay import DEFAULT_MAX_REPLAYS, Policy, ReplayResult, Sender, Targets, open_sender, target_problem

log = logging.getLogger("kbridge.replay")

MAX_SELECTION = 500  # letters in one request: a selection is picked by hand, a larger one is a full replay
READ_TIMEOUT = 30.0  # seconds without reaching the next chosen letter before the replay stops
SEEK_GAP = 500  # chosen offsets further apart than this are reached by a seek, not by reading past the rest
NOT_FOUND = "no letter at that offset"

Selection = dict[int, list[int]]  # partition -> offsets, ascending, no repeats


def parse_offsets(text: str) -> list[tuple[int, int]]:
    """`P:O[,P:O...]` as (partition, offset) pairs; a KBridgeError naming the first malformed item."""
    pairs = []
    for item in text.split(","):
        partition, sep, offset = item.strip().partition(":")
        if not (sep and partition.isdigit() and offset.isdigit()):
            raise KBridgeError(f"--offsets item {item.strip()[:30]!r} is not PARTITION:OFFSET "
                               "(integers >= 0, for example 0:17,2:5)")
        pairs.append((int(partition), int(offset)))
    return pairs


def select(pairs: Iterable[tuple[int, int]]) -> Selection:
    """The chosen letters by partition, in the order they are sent; a KBridgeError if none or too many."""
    selection: dict[int, set[int]] = {}
    for partition, offset in pairs:
        if partition < 0 or offset < 0:
            raise KBridgeError(f"partition and offset must be >= 0, got {partition}:{offset}")
        selection.setdefault(partition, set()).add(offset)
    count = sum(len(offsets) for offsets in selection.values())
    if not count:
        raise KBridgeError("no letters chosen: name at least one PARTITION:OFFSET")
    if count > MAX_SELECTION:
        raise KBridgeError(f"{count} letters chosen; at most {MAX_SELECTION} at once "
                           "(replay a whole topic with `kbridge dlq replay` instead)")
    return {p: sorted(offsets) for p, offsets in sorted(selection.items())}


def selection_problem(
    dlq_topic: str, selection: Selection, earliest: dict[TopicPartition, int], ends: dict[TopicPartition, int]
) -> str | None:
    """Why the selection is refused whole, or None: every partition must exist, every offset lie in it."""
    for partition, offsets in selection.items():
        tp = TopicPartition(dlq_topic, partition)
        if tp not in ends:
            return f"{dlq_topic!r} has no partition {partition} (it has {len(ends)})"
        low, end = earliest[tp], ends[tp]
        for offset in offsets:
            if offset >= end:
                return (f"offset {offset} of {dlq_topic}-{partition} is past its end: its letters are "
                        f"{low}..{end - 1}" if end > low else f"{dlq_topic}-{partition} holds no letter")
            if offset < low:
                return (f"offset {offset} of {dlq_topic}-{partition} is gone (deleted by retention); "
                        f"its earliest is {low}")
    return None


def replay_selected(
    settings: Settings,
    dlq_topic: str,
    targets: Targets,
    selection: Selection,
    max_replays: int = DEFAULT_MAX_REPLAYS,
    force: bool = False,
    result: ReplayResult | None = None,
) -> ReplayResult:
    """Replay exactly the chosen letters of dlq_topic, in partition and offset order; commits nothing.

    result: counts as they go, so a caller still has them if this raises.
    """
    if targets.to is not None and (problem := target_problem(targets.to, dlq_topic)) is not None:
        raise KBridgeError(problem)
    result = result if result is not None else ReplayResult()
    result.total = sum(len(offsets) for offsets in selection.values())
    try:
        consumer = KafkaConsumer(**{**settings.consumer_config(), "group_id": None, "enable_auto_commit": False,
                                    "auto_offset_reset": "earliest", "fetch_max_wait_ms": 100})
    except KafkaError as exc:
        raise KBridgeError(f"cannot reach Kafka to replay {dlq_topic!r}: {type(exc).__name__}: {exc}") from None
    sender: Sender | None = None
    try:
        tps = partitions_of(consumer, dlq_topic, "`kbridge info` lists each route's dlq")
        ends = high_watermarks(settings.consumer_config(), tps)
        earliest = consumer.beginning_offsets(tps)
        if (problem := selection_problem(dlq_topic, selection, earliest, ends)) is not None:
            raise KBridgeError(f"nothing replayed: {problem}")
        existing = consumer.topics()
        if targets.to is not None and targets.to not in existing:
            raise KBridgeError(f"--to topic {targets.to!r} does not exist in Kafka; create it first")
        sender = open_sender(settings, consumer, existing, targets, dlq_topic, Policy(max_replays, force))
        for partition, offsets in selection.items():
            _replay_partition(consumer, sender, TopicPartition(dlq_topic, partition), offsets, result)
        return result
    except KafkaError as exc:
        raise KBridgeError(f"replay of {dlq_topic!r} stopped: {type(exc).__name__}: {exc}") from None
    finally:
        if sender is not None:
            sender.producer.close(timeout=10)
        consumer.close(autocommit=False)


def _replay_partition(
    consumer: KafkaConsumer, sender: Sender, tp: TopicPartition, offsets: list[int], result: ReplayResult
) -> None:
    """Read tp from the first chosen offset, sending the chosen letters as they come, seeking over long gaps."""
    consumer.assign([tp])
    consumer.seek(tp, offsets[0])
    todo = list(offsets)
    deadline = time.monotonic() + READ_TIMEOUT
    while todo:
        if time.monotonic() > deadline:
            raise KBridgeError(f"reading {tp.topic}-{tp.partition} at offset {todo[0]} took longer than "
                               f"{READ_TIMEOUT:.0f}s; the letters before it were handled, run it again for the rest")
        for record in consumer.poll(timeout_ms=200, max_records=100).get(tp, []):
            while todo and todo[0] < record.offset:
                _not_found(tp, todo.pop(0), result)
            if todo and todo[0] == record.offset:
                todo.pop(0)
                sender.handle(record, result)
                deadline = time.monotonic() + READ_TIMEOUT
        position = consumer.position(tp)
        while todo and todo[0] < position:  # read past without a record there
            _not_found(tp, todo.pop(0), result)
        if todo and todo[0] - position > SEEK_GAP:
            consumer.seek(tp, todo[0])


def _not_found(tp: TopicPartition, offset: int, result: ReplayResult) -> None:
    log.warning("skipped dead letter %s-%d@%d: there is no letter at that offset (a compacted record or a "
                "transaction marker)", tp.topic, tp.partition, offset)
    result.skipped += 1
    result.skipped_by[NOT_FOUND] += 1
