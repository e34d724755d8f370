"""One consumer group's poll loop: poll, run each partition's batch through the chain of steps, commit.

The loop itself only polls, submits what was fetched to the chain (kbridge.listener.steps),
pauses the partitions a step asks to hold and resubmits their rest after a backoff,
commits and does housekeeping. kafka-python consumers are not thread-safe, so polling,
committing and the rebalance callbacks all happen on the thread that runs
GroupProcessor.run(). A held partition never advances past the message it was held at.
A partition the Kafka client cannot decode is held the same way, or moves on past a
single undecodable record once its dead letter is acknowledged (kbridge.listener.undecodable).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import tenacity
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from .. import callbacks
from ..errors import ConfigError
from ..params import Params
from ..routing import ConsumerGroup, Route
from ..routing.patterns import subscription
from . import undecodable
from .collector import collect_young
from .connectivity import KafkaWatch
from .decoding import DecodeFailure, DecodeGuard, Polled
from .heap import release_free_memory
from .offsets import OffsetTracker
from .steps import Chain, Fetched, Pending, StepContext, build_chain

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("kbridge.listener")

HOUSEKEEPING_INTERVAL = 5.0


@dataclass
class Stats:
    """Counters of one group, read by the summary logger and by tests."""

    fetched: int = 0
    filtered: int = 0
    enqueued: int = 0
    dead_lettered: int = 0
    expired: int = 0  # expire_after: committed, never handed over
    committed_offsets: dict[str, int] = field(default_factory=dict)
    # time.monotonic() when the poll loop last completed a turn; 0.0 until it first does.
    # A swarm supervisor replaces a node whose loop stopped turning (kbridge.swarm.health).
    last_tick: float = 0.0


@dataclass
class _Held:
    offset: int  # the partition's first offset not handled
    pending: list[Pending]  # resubmitted to their steps on retry; none: an undecodable batch, fetched again
    attempts: int
    retry_at: float
    reason: str
    planned: bool = False  # a flow-control wait (Hold.until), not a failure

    @property
    def messages(self) -> list[Params]:
        """Every message still to be handled, in offset order."""
        return [m for item in self.pending for m in item.batch.messages]


class GroupProcessor:
    def __init__(self, runtime: Runtime, group: ConsumerGroup, stop: threading.Event,
                 paused: Callable[[str, str, int], bool] | None = None) -> None:
        self.runtime = runtime
        self.group = group
        self.stop = stop
        self.stats = Stats()
        self.offsets = OffsetTracker()
        self._held: dict[TopicPartition, _Held] = {}
        self._refetching: dict[TopicPartition, _Held] = {}  # resumed to fetch an undecodable batch again
        self._decoder: DecodeGuard | None = None  # set with the consumer; survives undecodable batches
        self._wait = tenacity.wait_exponential_jitter(
            multiplier=0.5, max=runtime.settings.enqueue_backoff_max, jitter=0.5
        )
        self.consumer: KafkaConsumer | None = None
        self._commit_failing = False
        self._next_housekeeping = 0.0
        # Group-wide consumer callbacks run once per consumer class (kbridge.callbacks).
        self._per_class = {
            kind: callbacks.per_consumer_class(group.routes(), kind)
            for kind in (callbacks.BEFORE_POLL, callbacks.AFTER_POLL, callbacks.BEFORE_STOP)
        }
        self.monitor = runtime.monitor  # events: kbridge.instrumentation.EVENTS; payloads built only if listened to
        context = StepContext(group.id, runtime, self.stats, self.offsets, highwater=self._highwater,
                              paused=paused)
        self.chain = build_chain(context, self._route_of, routes=group.routes())
        self._kafka = KafkaWatch(group.id, lambda event, payload: self.monitor.instrument(event, **payload))

    # -- lifecycle -------------------------------------------------------

    def run(self) -> None:
        # Kafka names of the routed topics (the topic mapper); a broken mapper fails here, before connecting.
        topics, pattern = subscription(self.runtime.settings.topic_mapper, self.group.topics,
                                       self.group.patterns.values())
        self.consumer = self._connect_with_backoff()
        if self.consumer is None:
            return  # stopped while Kafka was unreachable
        try:
            if isinstance(self.consumer, KafkaConsumer):  # a stand-in (tests) has no fetcher to guard
                self._decoder = DecodeGuard(self.consumer)
            self.consumer.subscribe(topics=topics, pattern=pattern, listener=_Rebalance(self))
            self.monitor.instrument("assignment.waiting", group_id=self.group.id,
                                    topics=[pattern] if pattern else topics)
            while not self.stop.is_set():
                self.tick()
        finally:
            self._shutdown()

    def tick(self) -> None:
        assert self.consumer is not None
        self._retry_held()
        callbacks.fire_all(callbacks.BEFORE_POLL, self._per_class[callbacks.BEFORE_POLL])
        settings = self.runtime.settings
        monitor = self.monitor
        if monitor.listens("poll.started"):
            monitor.instrument("poll.started", group_id=self.group.id)
        polled_at = time.monotonic()
        polled, failures = self._poll(int(settings.poll_timeout * 1000), settings.max_poll_records)
        if monitor.listens("poll.finished"):
            monitor.instrument("poll.finished", group_id=self.group.id,
                               messages=sum(map(len, polled.values())), seconds=time.monotonic() - polled_at)
        now_ms = time.time() * 1000.0
        for tp, records in polled.items():
            if self._refetching:
                self._decodes_again(tp)
            self._take(Fetched(tp, records, receive_time_ms=now_ms))
        for failure in failures:
            self._undecodable(failure)
        self.commit()
        callbacks.fire_all(callbacks.AFTER_POLL, self._per_class[callbacks.AFTER_POLL])
        if time.monotonic() >= self._next_housekeeping:
            self._housekeeping()
        self._kafka.check(self.consumer)
        for ticks in self.chain.ticks:  # tick_interval routes only
            ticks.idle(self.consumer.assignment(), self._route_of)
        self.stats.last_tick = time.monotonic()

    def _poll(self, timeout_ms: int, max_records: int) -> tuple[Polled, list[DecodeFailure]]:
        """Records, and the partitions the Kafka client could not decode (never raised: rule 7)."""
        assert self.consumer is not None
        if self._decoder is None:  # a stand-in consumer (tests)
            return self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records), []
        return self._decoder.poll(timeout_ms, max_records)

    def _route_of(self, kafka_topic: str) -> Route:
        """A fetched partition's route: the topic mapper turns the Kafka name back into the route's name."""
        return self.group.route_for(self.runtime.settings.topic_mapper.incoming(kafka_topic))

    def _highwater(self, tp: TopicPartition) -> int | None:
        """From the last fetch response (correct even on Tansu, whose ListOffsets is not)."""
        return None if self.consumer is None else self.consumer.highwater(tp)

    def _take(self, fetched: Fetched) -> None:
        hold = self.chain.take(fetched)
        if hold is not None:
            self._hold(fetched.tp, hold.pending, hold.reason, attempts=1, until=hold.until)

    def _housekeeping(self) -> None:
        """Backend chores off the hot path, e.g. re-queueing tasks a Redis broker lost."""
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        for name in {t.backend for t in self.group.routes()}:
            try:
                self.runtime.backend(name).housekeeping()
            except Exception as exc:  # the broker may be down; enqueueing reports that already
                log.debug("housekeeping of backend %s failed: %s", name, exc)
        collect_young()
        release_free_memory()

    def _connect_with_backoff(self) -> KafkaConsumer | None:
        """Kafka down at start is a state to wait out with backoff, not a crash loop."""
        attempts = 0
        servers = self.runtime.settings.kafka.get("bootstrap_servers")
        while not self.stop.is_set():
            try:
                consumer = self._connect()
            except (KafkaTimeoutError, KafkaConnectionError) as exc:
                attempts += 1
                delay = self._backoff(attempts)
                error = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
                self.monitor.instrument("connect.failed", group_id=self.group.id, attempts=attempts, delay=delay,
                                        error=error)
                if attempts == 1:  # one state line; connect.failed counts the attempts
                    self.monitor.instrument("kafka.waiting", group_id=self.group.id, servers=servers, error=error)
                self.stop.wait(delay)
                continue
            self.monitor.instrument("kafka.connected", group_id=self.group.id, servers=servers)
            return consumer
        return None

    def _connect(self) -> KafkaConsumer:
        starts = {t.start_from_beginning for t in self.group.routes()}
        if not starts:
            raise ConfigError([f"consumer group {self.group.name!r} routes no topic; add group.topic(...)"])
        if len(starts) > 1:
            raise ConfigError([
                f"consumer group {self.group.name!r} mixes start_from_beginning=True and False; "
                "Kafka applies it per consumer group, so put those topics in separate groups"
            ])
        return KafkaConsumer(
            # Short bootstrap attempts keep a stop request responsive while Kafka is down.
            # A short fetch wait: a bridge should hand a message over soon after it arrives.
            **{"bootstrap_timeout_ms": 5000, "fetch_max_wait_ms": 100, **self.runtime.settings.consumer_config()},
            group_id=self.group.id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if starts.pop() else "latest",
        )

    def _shutdown(self) -> None:
        if self.consumer is None:
            return
        try:
            callbacks.fire_all(callbacks.BEFORE_STOP, self._per_class[callbacks.BEFORE_STOP])
            self.commit()
        finally:
            self.consumer.close(autocommit=False)  # leaves the group
            log.info("consumer group %s stopped: %s", self.group.id, self.summary())

    # -- holding and retrying -------------------------------------------

    def _hold(self, tp: TopicPartition, pending: list[Pending], reason: str, attempts: int,
              offset: int | None = None, until: float | None = None) -> None:
        """Pause tp and keep what its steps left to do until a retry resubmits it.

        With nothing pending (a batch that could not be decoded), a retry fetches from offset again.
        A hold with until (flow control) is a planned wait: resumed then, quietly and without backoff.
        """
        assert self.consumer is not None
        previous = self._held.get(tp) or self._refetching.pop(tp, None)
        delay = self._backoff(attempts) if until is None else max(0.0, until - time.monotonic())
        at = pending[0].batch.start_offset if pending else offset
        assert at is not None
        self._held[tp] = _Held(at, pending, attempts, time.monotonic() + delay, reason, planned=until is not None)
        self.consumer.pause(tp)
        if until is None and (previous is None or previous.reason != reason):  # one line per state change
            log.warning(
                "paused %s-%d at offset %d: %s; retrying with backoff (next in %.1fs)",
                tp.topic, tp.partition, at, reason, delay,
            )
            self.monitor.instrument("partition.held", group_id=self.group.id, topic=tp.topic,
                                    partition=tp.partition, offset=at, reason=reason)

    def _retry_held(self) -> None:
        assert self.consumer is not None
        now = time.monotonic()
        for tp, held in list(self._held.items()):
            if held.retry_at > now:
                continue
            if not held.pending:  # an undecodable batch: the next poll fetches it again
                self._refetching[tp] = self._held.pop(tp)
                self.consumer.resume(tp)
                continue
            hold = Chain.resume(held.pending)
            if hold is None:
                del self._held[tp]
                self.consumer.resume(tp)
                if not held.planned:
                    log.warning("resumed %s-%d after %d attempt(s)", tp.topic, tp.partition, held.attempts + 1)
            else:
                attempts = 1 if hold.until is not None or held.planned else held.attempts + 1
                self._hold(tp, hold.pending, hold.reason, attempts=attempts, until=hold.until)

    # -- records the Kafka client cannot decode (rule 7) ---------------

    def _undecodable(self, failure: DecodeFailure) -> None:
        """Salvage the batch and move past the records it cannot decode, or hold the partition."""
        assert self.consumer is not None and self._decoder is not None
        tp = failure.tp
        if tp in self._held:
            return  # paused where the client stopped, so it meets the batch again once the partition resumes
        route = self._route_of(tp.topic)
        step = undecodable.plan(failure, self._decoder.config, route.deserializer, time.time() * 1000.0)
        if isinstance(step, undecodable.Wait):
            retried = self._refetching.get(tp)
            attempts = retried.attempts + 1 if retried is not None and retried.offset == step.offset else 1
            if attempts == 1:
                self.monitor.instrument("record.undecodable", group_id=self.group.id, topic=tp.topic,
                                        partition=tp.partition, offset=step.offset,
                                        error=undecodable.describe(failure.error), action="held")
            self._hold(tp, [], f"cannot decode: {step.reason}", attempts, offset=step.offset)
            return
        self._decodes_again(tp)
        self.consumer.seek(tp, step.resume_at)  # past the salvaged batch: the client would fail on it again
        self._take(Fetched(tp, messages=step.messages, refused=dict(step.refused)))

    def _decodes_again(self, tp: TopicPartition) -> None:
        held = self._refetching.pop(tp, None)
        if held is not None:
            log.warning("resumed %s-%d: offset %d can be read again after %d attempt(s)",
                        tp.topic, tp.partition, held.offset, held.attempts + 1)

    def _backoff(self, attempts: int) -> float:
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempts
        return float(self._wait(state))

    # -- committing ------------------------------------------------------

    def commit(self, only: Sequence[TopicPartition] | None = None) -> None:
        """Commit every safe offset; called on the polling thread only."""
        assert self.consumer is not None
        pending = self.offsets.pending(only)
        if not pending:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in pending.items()})
        except KafkaError as exc:
            # Not committed is safe: the offsets stay pending and the next tick tries again.
            self.monitor.instrument("commit.failed", group_id=self.group.id, error=f"{type(exc).__name__}: {exc}")
            if not self._commit_failing:
                log.warning("consumer group %s: commit failed (%s: %s); will retry", self.group.id,
                            type(exc).__name__, exc)
            self._commit_failing = True
            return
        if self._commit_failing:
            log.warning("consumer group %s: commits succeed again", self.group.id)
            self._commit_failing = False
        self.offsets.committed(pending)
        for tp, o in pending.items():
            self.stats.committed_offsets[f"{tp.topic}-{tp.partition}"] = o
        if self.monitor.listens("commit"):
            self.monitor.instrument("commit", group_id=self.group.id,
                                    offsets={f"{tp.topic}-{tp.partition}": o for tp, o in pending.items()})

    def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.commit(list(revoked))
        self.offsets.forget(revoked)
        for tp in revoked:
            self._held.pop(tp, None)
            self._refetching.pop(tp, None)

    def held_reasons(self) -> dict[TopicPartition, str]:
        """Why each held partition is held; safe to read from another thread (a reporter)."""
        return {tp: held.reason for tp, held in dict(self._held).items()}

    def summary(self) -> str:
        s = self.stats
        return (
            f"fetched={s.fetched} enqueued={s.enqueued} filtered={s.filtered} "
            f"dead_lettered={s.dead_lettered} expired={s.expired} held={len(self._held) + len(self._refetching)}"
        )


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, processor: GroupProcessor) -> None:
        self.processor = processor

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        if revoked:
            self.processor.on_revoked(revoked)
            self.processor.monitor.instrument("rebalance.revoked", group_id=self.processor.group.id,
                                              partitions=_pairs(revoked))

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        # Emitted even when empty: the member joined the group (a listener past the partition count gets none).
        self.processor.monitor.instrument("rebalance.assigned", group_id=self.processor.group.id,
                                          partitions=_pairs(assigned))


def _pairs(tps: Sequence[TopicPartition]) -> list[tuple[str, int]]:
    return [(tp.topic, tp.partition) for tp in sorted(tps)]
