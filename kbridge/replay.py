"""kbridge dlq replay: send dead-lettered messages back to the topic they came from.

Replay is itself at least once: it reads the dead-letter topic in its own consumer
group (<client_id>_dlq_replay) and commits a dead letter only after its target
acknowledged the copy, so a replay that is interrupted picks up where it stopped.

Where a letter goes is not up to the letter. Its kbridge-origin-topic header is only
data: anyone who can write to a dead-letter topic can write any header. So replay
writes only to topics the app routes (their Kafka names, through the topic mapper), or
to the one topic named by `--to`, and never to an internal `__` topic. A letter it
cannot replay is skipped: logged with its offset and why, counted, and committed past,
so that the next run does not meet it again. It stays in the dead-letter topic.

Replay ends. It reads up to the end each partition had when it started (the fetch high
watermark, see kbridge/highwater.py) and stops there; --follow keeps reading. Each copy
carries a kbridge-replays header counting its trips, which the dead-letter producer keeps,
so a poison message a running listener dead-letters again is skipped with a warning once
it has been replayed --max-replays times.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import (
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from .config import Settings
from .dlq import HEADER_PREFIX, ORIGIN_TOPIC, REPLAYS
from .errors import KBridgeError
from .highwater import high_watermarks, partitions_of
from .routing.lookup import route_of_kafka_topic
from .routing.mapper import kafka_names
from .routing.names import name_problem

if TYPE_CHECKING:
    from .app import KBridge

log = logging.getLogger("kbridge.replay")

JOIN_TIMEOUT = 60.0
JOIN_NOTICE = 5.0  # seconds of waiting for the group before replay says so
# A letter sent back this often and dead-lettered again each time is poison: skipped unless --force.
DEFAULT_MAX_REPLAYS = 3
INTERNAL_PREFIX = "__"  # Kafka's own topics: __consumer_offsets, __transaction_state, ...
# Refusals by Kafka that no retry of this letter can change: it is skipped, not retried for ever.
UNREPLAYABLE = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError)

# Why a letter was skipped: the categories counted in ReplayResult.skipped_by.
NO_ORIGIN = "no origin header"
ILLEGAL = "illegal topic name"
INTERNAL = "internal Kafka topic"
LOOP = "the dead-letter topic itself"
UNROUTED = "not routed by this app"
REFUSED = "refused by Kafka"
TOO_OFTEN = "replayed too often"
BAD_COUNT = "malformed replay count"


@dataclass
class ReplayResult:
    replayed: int = 0
    skipped: int = 0
    replayed_to: Counter[str] = field(default_factory=Counter)  # Kafka topic -> letters replayed there
    skipped_by: Counter[str] = field(default_factory=Counter)  # why (one of the categories above) -> letters
    total: int | None = None  # letters between the group's offsets and the ends seen at the start; None: --follow

    @property
    def handled(self) -> int:
        return self.replayed + self.skipped

    def summary(self, dlq_topic: str) -> str:
        if self.total == 0:
            return f"nothing to replay in {dlq_topic}: this app's replay group has handled every letter in it"
        text = f"replayed {self.replayed} message(s) from {dlq_topic}"
        if self.replayed_to:
            text += " (" + ", ".join(f"{t}: {n}" for t, n in sorted(self.replayed_to.items())) + ")"
        text += f"; skipped {self.skipped}"
        if self.skipped:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped_by.items()))
            text += f" ({why}; each is logged with its offset, and stays in {dlq_topic})"
        return text


@dataclass(frozen=True)
class Targets:
    """Where letters may go: their origin if it is one of routed (Kafka names) or one that routes reaches (the
    app's route lookup, pattern routes included), or every letter to `to`."""

    routed: frozenset[str]
    to: str | None = None
    routes: Callable[[str], bool] | None = None
    patterns: tuple[str, ...] = ()  # the pattern routes' regexes, for messages

    def accepts(self, origin: str) -> bool:
        return origin in self.routed or (self.routes is not None and self.routes(origin))

    def describe(self) -> str:
        shown = sorted(self.routed) + [f"/{p}/" for p in self.patterns]
        return ", ".join(shown) or "none"


def routed_targets(app: KBridge) -> Targets:
    """The Kafka names of every topic app routes, and whatever its pattern routes reach, resolved as a listener
    resolves them; a broken topic mapper is a ConfigError."""
    names = sorted({route.name for route in app.routes if route.pattern is None})
    patterns = tuple(route.pattern.pattern for route in app.routes if route.pattern is not None)
    mapper, groups = app.settings.topic_mapper, list(app.routes.groups.values())
    return Targets(frozenset(kafka_names(mapper, names)),
                   routes=(lambda topic: route_of_kafka_topic(groups, mapper, topic) is not None) if patterns else None,
                   patterns=patterns)


def target_problem(topic: str, dlq_topic: str) -> str | None:
    """Why `--to topic` is refused, or None: it must be a legal, non-internal topic other than the one replayed."""
    if (problem := name_problem("--to topic", topic)) is not None:
        return problem
    if topic.startswith(INTERNAL_PREFIX):
        return f"--to topic {topic!r} is internal to Kafka ({INTERNAL_PREFIX!r} prefix); replay never writes there"
    if topic == dlq_topic:
        return f"--to topic {topic!r} is the dead-letter topic being replayed; replay would read its own copies"
    return None


def replay(
    settings: Settings,
    dlq_topic: str,
    targets: Targets,
    limit: int | None = None,
    follow: bool = False,
    max_replays: int = DEFAULT_MAX_REPLAYS,
    force: bool = False,
    result: ReplayResult | None = None,
    progress: Callable[[ReplayResult], None] | None = None,
) -> ReplayResult:
    """Replay up to limit dead letters, up to the end the topic had when replay started (follow: for ever).

    Stopping at the starting end is what ends a poison loop: a letter a running listener
    dead-letters again lands past that end, so this run never meets it.
    result: counts as they go, so a caller still has them if this raises (an interrupt, an
    error that stops the replay). Everything handled before that is committed.
    progress: called with the counts after each poll that handled letters.
    """
    if targets.to is not None and (problem := target_problem(targets.to, dlq_topic)) is not None:
        raise KBridgeError(problem)
    result = result if result is not None else ReplayResult()
    try:
        consumer = KafkaConsumer(
            **settings.consumer_config(),
            group_id=f"{settings.client_id}_dlq_replay",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
    except KafkaError as exc:
        raise KBridgeError(f"cannot reach Kafka to replay {dlq_topic!r}: {type(exc).__name__}: {exc}") from None
    policy = Policy(max_replays, force)
    try:
        return _run(consumer, settings, dlq_topic, targets, limit, follow, policy, result, progress)
    except KafkaError as exc:
        raise KBridgeError(f"replay of {dlq_topic!r} stopped: {type(exc).__name__}: {exc}") from None


def _run(
    consumer: KafkaConsumer, settings: Settings, dlq_topic: str, targets: Targets, limit: int | None,
    follow: bool, policy: Policy, result: ReplayResult, progress: Callable[[ReplayResult], None] | None,
) -> ReplayResult:
    producer: KafkaProducer | None = None
    done: dict[TopicPartition, int] = {}  # the next offset to read, per partition: what may be committed
    committed: dict[TopicPartition, int] = {}
    try:
        tps = partitions_of(consumer, dlq_topic, "`kbridge info` lists each route's dlq")
        existing = consumer.topics()
        if targets.to is not None and targets.to not in existing:
            raise KBridgeError(f"--to topic {targets.to!r} does not exist in Kafka; create it first")
        ends: dict[TopicPartition, int] | None = None
        if not follow:
            ends = high_watermarks(settings.consumer_config(), tps)
            starts = _starts(consumer, tps)
            result.total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
            if limit is not None:
                result.total = min(result.total, limit)
            if not result.total:
                return result  # nothing to replay: no need to join the group
            done.update({tp: starts[tp] for tp in tps if starts[tp] >= ends[tp]})
        sender = open_sender(settings, consumer, existing, targets, dlq_topic, policy)
        producer = sender.producer
        consumer.subscribe([dlq_topic])
        joining = time.monotonic()
        said_waiting = False
        while limit is None or result.handled < limit:
            room = 500 if limit is None else min(500, limit - result.handled)
            polled = consumer.poll(timeout_ms=500, max_records=room)
            if not consumer.assignment():
                waited = time.monotonic() - joining
                if waited > JOIN_TIMEOUT:
                    raise KBridgeError(f"no partitions of {dlq_topic!r} assigned within {JOIN_TIMEOUT:.0f}s; "
                                       "is another replay running in the same group?")
                if waited > JOIN_NOTICE and not said_waiting:
                    said_waiting = True  # a long group join is not a hang: say what replay waits for
                    log.info("waiting for consumer group %s to assign partitions of %s (%.0fs so far)",
                             consumer.config["group_id"], dlq_topic, waited)
                continue
            for tp, records in polled.items():
                end = None if ends is None else ends.get(tp, 0)
                for record in records:
                    if end is not None and record.offset >= end:
                        break  # arrived after replay started (perhaps a letter this run sent back)
                    sender.handle(record, result)
                    done[tp] = record.offset + 1
            if ends is not None:
                _past_end(consumer, ends, done)
            _commit(consumer, done, committed)
            if polled and progress is not None:
                progress(result)
            if ends is not None and all(done.get(tp, -1) >= end for tp, end in ends.items()):
                break
    finally:
        try:
            _commit(consumer, done, committed)  # what was handled before an interrupt or an error
        except Exception as exc:
            log.warning("could not commit the replay's progress (%s: %s); a rerun replays those letters again",
                        type(exc).__name__, exc)
        finally:
            if producer is not None:
                producer.close(timeout=10)
            consumer.close(autocommit=False)
    return result


def _past_end(consumer: KafkaConsumer, ends: Mapping[TopicPartition, int], done: dict[TopicPartition, int]) -> None:
    """A partition whose position reached its end is done, though its last offsets were no letter (a
    transaction marker, a compacted record): every letter below the end was returned and handled by then."""
    for tp in consumer.assignment():
        end = ends.get(tp)
        if end is not None and done.get(tp, -1) < end and consumer.position(tp) >= end:
            done[tp] = end


def _starts(consumer: KafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Where this group would start reading each partition: its committed offset, else the earliest."""
    earliest = consumer.beginning_offsets(tps)  # ListOffsets(EARLIEST) is right on every broker
    starts = {}
    for tp in tps:
        at = consumer.committed(tp)
        starts[tp] = earliest[tp] if at is None else max(at, earliest[tp])
    return starts


def _commit(consumer: KafkaConsumer, done: Mapping[TopicPartition, int], committed: dict[TopicPartition, int]) -> None:
    fresh = {tp: offset for tp, offset in done.items() if committed.get(tp) != offset}
    if fresh:
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in fresh.items()})
        committed.update(fresh)


@dataclass(frozen=True)
class Policy:
    """How often a letter may be sent back: a message that fails every time it is replayed would otherwise
    travel between replay and a running listener for ever."""

    max_replays: int
    force: bool

    def check(self, headers: Iterable[tuple[str, bytes | None]]) -> tuple[int, str, str]:
        """(replays so far, "", "") if the letter may go, else (count, category, why)."""
        raw = dict(headers).get(REPLAYS)
        try:
            count = int(raw.decode("ascii")) if raw else 0
            if count < 0:
                raise ValueError(count)
        except (UnicodeDecodeError, ValueError):
            if self.force:
                return 0, "", ""
            shown = (raw or b"")[:30]
            return 0, BAD_COUNT, f"its {REPLAYS} header {shown!r} is not a count; --force replays it anyway"
        if count >= self.max_replays and not self.force:
            return count, TOO_OFTEN, (f"it was replayed {count} time(s) already and failed again each time "
                                      f"(--max-replays {self.max_replays}); fix the cause, then replay it with --force")
        return count, "", ""


def open_sender(settings: Settings, consumer: KafkaConsumer, existing: Iterable[str], targets: Targets,
                dlq_topic: str, policy: Policy) -> Sender:
    """A Sender with a producer of its own, which the caller closes (sender.producer.close)."""
    producer = KafkaProducer(**{"acks": "all", **settings.producer_config()})
    return Sender(producer, consumer, set(existing), targets, dlq_topic, settings.produce_timeout, policy)


class Sender:
    """Decides where one letter may go, and sends it there or skips it: `dlq replay` and a replay of
    chosen letters (kbridge/replay_selection.py) both send each letter through here."""

    def __init__(
        self, producer: KafkaProducer, consumer: KafkaConsumer, existing: set[str], targets: Targets, dlq_topic: str,
        timeout: float, policy: Policy,
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.existing = existing
        self.targets = targets
        self.dlq_topic = dlq_topic
        self.timeout = timeout
        self.policy = policy

    def handle(self, record: Any, result: ReplayResult) -> None:
        headers: list[tuple[str, bytes | None]] = list(record.headers or [])
        where = f"{record.topic}-{record.partition}@{record.offset}"
        replays, category, why = self.policy.check(headers)
        if category:
            self._skip(where, category, why, result)
            return
        target = self.targets.to
        if target is None:
            origin, category, why = self._origin(headers)
            if origin is None:
                self._skip(where, category, why, result)
                return
            target = origin
        if target not in self.existing:
            self.existing |= set(self.consumer.topics())  # it may have been created since replay started
            if target not in self.existing:
                raise KBridgeError(
                    f"{where}: topic {target!r} does not exist in Kafka; create it (`kbridge topics create`) "
                    "and run replay again, which resumes at this letter"
                )
        kept = [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]
        kept.append((REPLAYS, str(replays + 1).encode()))
        try:
            self.producer.send(target, value=record.value, key=record.key, headers=kept).get(timeout=self.timeout)
        except UNREPLAYABLE as exc:
            self._skip(where, REFUSED, f"Kafka refused it for {target!r}: {type(exc).__name__}: {exc}", result)
            return
        except KafkaTimeoutError:
            raise KBridgeError(
                f"{where}: Kafka did not acknowledge the copy to {target!r} within {self.timeout:g}s; "
                "run replay again, which resumes at this letter"
            ) from None
        except KafkaError as exc:
            raise KBridgeError(
                f"{where}: Kafka did not take the copy to {target!r}: {type(exc).__name__}: {exc}; "
                "run replay again once that is fixed, which resumes at this letter"
            ) from None
        result.replayed += 1
        result.replayed_to[target] += 1

    def _origin(self, headers: Iterable[tuple[str, bytes | None]]) -> tuple[str | None, str, str]:
        """(origin topic, "", "") if the letter may go back there, else (None, category, why)."""
        raw = dict(headers).get(ORIGIN_TOPIC)
        if not raw:
            return None, NO_ORIGIN, f"it has no {ORIGIN_TOPIC} header, so it is not a kbridge dead letter; " \
                "replay it with --to TOPIC"
        try:
            origin = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, ILLEGAL, f"its {ORIGIN_TOPIC} header {raw[:60]!r} is not UTF-8, so not a topic name"
        if (problem := name_problem(f"origin topic (header {ORIGIN_TOPIC})", origin)) is not None:
            return None, ILLEGAL, problem
        if origin.startswith(INTERNAL_PREFIX):
            return None, INTERNAL, f"origin topic {origin!r} is internal to Kafka; replay never writes there"
        if origin == self.dlq_topic:
            return None, LOOP, f"origin topic {origin!r} is the dead-letter topic being replayed"
        if not self.targets.accepts(origin):
            return None, UNROUTED, (f"origin topic {origin!r} is not a topic this app routes "
                                    f"(routed: {self.targets.describe()}); "
                                    "replay it with --to TOPIC if it belongs somewhere")
        return origin, "", ""

    def _skip(self, where: str, category: str, why: str, result: ReplayResult) -> None:
        log.warning("skipped dead letter %s: %s", where, why)
        result.skipped += 1
        result.skipped_by[category] += 1
