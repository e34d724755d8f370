"""One consumer group's loop: poll -> route -> filter -> enqueue -> commit, all on one thread.

kafka-python consumers are not thread-safe, so polling, committing and the
rebalance callbacks all happen on the thread that runs GroupProcessor.run().
A partition whose message cannot be handed over is paused and retried with
backoff; it never advances past that message. A partition the Kafka client cannot
decode is handled the same way, or moves on past a single undecodable record once its
dead letter is acknowledged (kbridge.listener.undecodable).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import tenacity
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import CorruptRecordError, KafkaConnectionError, KafkaError, KafkaTimeoutError

from .. import callbacks
from ..consumer import collecting_marks
from ..errors import ConfigError, EnqueueError
from ..interchange import params_from_record
from ..params import Params, ParamsBatch
from ..routing import ConsumerGroup, Route
from ..routing.mapper import kafka_names
from . import undecodable
from .connectivity import KafkaWatch
from .decoding import DecodeFailure, DecodeGuard, Polled
from .offsets import OffsetTracker

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
    committed_offsets: dict[str, int] = field(default_factory=dict)
    # time.monotonic() when the poll loop last completed a turn; 0.0 until it first does.
    # A swarm supervisor replaces a node whose loop stopped turning (kbridge.swarm.health).
    last_tick: float = 0.0


@dataclass
class _Held:
    offset: int  # the partition's first offset not handled
    messages: list[Params]  # handed over on retry; none for a batch that could not be decoded, fetched again
    attempts: int
    retry_at: float
    reason: str
    refused: dict[int, CorruptRecordError] = field(default_factory=dict)  # dead-lettered, not handed over


class GroupProcessor:
    def __init__(self, runtime: Runtime, group: ConsumerGroup, stop: threading.Event) -> None:
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
            kind: callbacks.per_consumer_class(group.topics.values(), kind)
            for kind in (callbacks.BEFORE_POLL, callbacks.AFTER_POLL, callbacks.BEFORE_STOP)
        }
        self.monitor = runtime.monitor  # events: kbridge.instrumentation.EVENTS; payloads built only if listened to
        self._kafka = KafkaWatch(group.id, lambda event, payload: self.monitor.instrument(event, **payload))

    # -- lifecycle -------------------------------------------------------

    def run(self) -> None:
        # Kafka names of the routed topics (the topic mapper); a broken mapper fails here, before connecting.
        subscription = kafka_names(self.runtime.settings.topic_mapper, self.group.topics)
        self.consumer = self._connect_with_backoff()
        if self.consumer is None:
            return  # stopped while Kafka was unreachable
        try:
            if isinstance(self.consumer, KafkaConsumer):  # a stand-in (tests) has no fetcher to guard
                self._decoder = DecodeGuard(self.consumer)
            self.consumer.subscribe(topics=list(subscription), listener=_Rebalance(self))
            log.info("consumer group %s listening to %s", self.group.id, ", ".join(self.group.topics))
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
            route = self._route(tp)
            self.stats.fetched += len(records)
            if monitor.listens("fetch"):
                self._fetched(tp, len(records), records[-1].offset)
            messages = [params_from_record(r, route.deserializer, now_ms) for r in records]
            if callbacks.declares(route, callbacks.AFTER_FETCH):
                callbacks.fire(callbacks.AFTER_FETCH, route, ParamsBatch(messages))
            self._handle(tp, route, messages)
        for failure in failures:
            self._undecodable(failure)
        self.commit()
        callbacks.fire_all(callbacks.AFTER_POLL, self._per_class[callbacks.AFTER_POLL])
        if time.monotonic() >= self._next_housekeeping:
            self._housekeeping()
        self._kafka.check(self.consumer)
        self.stats.last_tick = time.monotonic()

    def _poll(self, timeout_ms: int, max_records: int) -> tuple[Polled, list[DecodeFailure]]:
        """Records, and the partitions the Kafka client could not decode (never raised: rule 7)."""
        assert self.consumer is not None
        if self._decoder is None:  # a stand-in consumer (tests)
            return self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records), []
        return self._decoder.poll(timeout_ms, max_records)

    def _route(self, tp: TopicPartition) -> Route:
        """A fetched partition's route: the topic mapper turns the Kafka name back into the route's name."""
        return self.group.topics[self.runtime.settings.topic_mapper.incoming(tp.topic)]

    def _fetched(self, tp: TopicPartition, count: int, last_offset: int) -> None:
        """The fetch event; lag comes from the fetch response's high watermark (correct even on Tansu)."""
        assert self.consumer is not None
        highwater = self.consumer.highwater(tp)
        lag = None if highwater is None else max(0, highwater - (last_offset + 1))
        self.monitor.instrument("fetch", group_id=self.group.id, topic=tp.topic, partition=tp.partition,
                                messages=count, lag=lag)

    def _housekeeping(self) -> None:
        """Backend chores off the hot path, e.g. re-queueing tasks a Redis broker lost."""
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        for name in {t.backend for t in self.group.topics.values()}:
            try:
                self.runtime.backend(name).housekeeping()
            except Exception as exc:  # the broker may be down; enqueueing reports that already
                log.debug("housekeeping of backend %s failed: %s", name, exc)

    def _connect_with_backoff(self) -> KafkaConsumer | None:
        """Kafka down at start is a state to wait out with backoff, not a crash loop."""
        attempts = 0
        while not self.stop.is_set():
            try:
                consumer = self._connect()
            except (KafkaTimeoutError, KafkaConnectionError) as exc:
                attempts += 1
                delay = self._backoff(attempts)
                self.monitor.instrument("connect.failed", group_id=self.group.id, attempts=attempts, delay=delay,
                                        error=f"{type(exc).__name__}: {exc}")
                if attempts == 1 or attempts % 10 == 0:
                    log.warning(
                        "consumer group %s: no Kafka broker reachable at %s (attempt %d); retrying in %.1fs",
                        self.group.id, self.runtime.settings.kafka.get("bootstrap_servers"), attempts, delay,
                    )
                self.stop.wait(delay)
                continue
            if attempts:
                log.warning("consumer group %s: Kafka reachable again after %d attempt(s)", self.group.id, attempts)
            return consumer
        return None

    def _connect(self) -> KafkaConsumer:
        starts = {t.start_from_beginning for t in self.group.topics.values()}
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

    # -- handling --------------------------------------------------------

    def _handle(self, tp: TopicPartition, route: Route, messages: list[Params]) -> None:
        failure = self._deliver(tp, route, messages)
        if failure is not None:
            self._hold(tp, *failure, attempts=1)

    def _deliver(
        self, tp: TopicPartition, route: Route, messages: list[Params]
    ) -> tuple[list[Params], str] | None:
        """Filter, then hand the accepted messages over, marking what is handled.

        One backend call, or one per batch of at most max_batch_size on batch-consuming
        topics. Filtering stops at a message whose dead letter Kafka did not acknowledge; what
        came before it is still handed over. On a topic with automatically_mark_as_consumed=False
        only perform()'s mark_as_consumed() calls mark offsets. Returns the messages not
        handled and why, or None when all were.
        """
        accepted: list[int] = []
        end, problem = len(messages), ""
        for i, message in enumerate(messages):
            try:
                if self._accepts(route, message):
                    accepted.append(i)
            except Exception as exc:
                end, problem = i, f"{type(exc).__name__}: {exc}"
                break
        started = time.monotonic()
        handed = 0
        try:
            with self._manual_marks(route):
                for unit in self._handovers(route, [messages[i] for i in accepted]):
                    self.runtime.backend(route.backend).enqueue(route, unit)
                    handed += len(unit)
        except Exception as exc:
            confirmed = handed + (exc.confirmed if isinstance(exc, EnqueueError) else 0)
            self.stats.enqueued += confirmed
            end, problem = accepted[confirmed], f"{type(exc).__name__}: {exc}"
            self._enqueued(tp, confirmed, started)
            self.monitor.instrument("enqueue.failed", group_id=self.group.id, topic=tp.topic, partition=tp.partition,
                                    offset=messages[end].offset, error=problem)
        else:
            self.stats.enqueued += len(accepted)
            self._enqueued(tp, len(accepted), started)
        if end and route.automatically_mark_as_consumed:
            self.offsets.mark(tp, messages[end - 1].offset)
        return (messages[end:], problem) if end < len(messages) else None

    @staticmethod
    def _handovers(route: Route, accepted: list[Params]) -> list[Sequence[Params]]:
        """One backend call per capped batch (the backend makes each one task); else all in one call."""
        if not accepted:
            return []
        return route.units(accepted) if route.batch_consuming and route.max_batch_size else [accepted]

    def _manual_marks(self, route: Route) -> AbstractContextManager[None]:
        """On manual topics, perform()'s marks go straight to the offset tracker (same thread, in order)."""
        if route.automatically_mark_as_consumed:
            return nullcontext()
        return collecting_marks(lambda p: self.offsets.mark(TopicPartition(p.topic, p.partition), p.offset))

    def _enqueued(self, tp: TopicPartition, count: int, started: float) -> None:
        if count and self.monitor.listens("enqueue"):
            self.monitor.instrument("enqueue", group_id=self.group.id, topic=tp.topic, partition=tp.partition,
                                    messages=count, seconds=time.monotonic() - started)

    def _accepts(self, route: Route, message: Params) -> bool:
        """Run the filters. A filter that raises dead-letters the message (rule 5): not dropped, not retried."""
        if not route.consumer._filters:
            return True
        try:
            accepted = route.consumer(route, ParamsBatch([message])).run_filters()
        except Exception as exc:
            self.monitor.instrument("filter.failed", group_id=self.group.id, topic=message.topic,
                                    partition=message.partition, offset=message.offset,
                                    error=f"{type(exc).__name__}: {exc}")
            self.runtime.dead_letters.send(route.dead_letter_topic, message, exc, 1, route.group_id)
            self.stats.dead_lettered += 1
            return False
        if not accepted:
            self.stats.filtered += 1
            if self.monitor.listens("filter.rejected"):
                self.monitor.instrument("filter.rejected", group_id=self.group.id, topic=message.topic,
                                        partition=message.partition, offset=message.offset)
        return accepted

    # -- holding and retrying -------------------------------------------

    def _hold(
        self, tp: TopicPartition, messages: list[Params], reason: str, attempts: int,
        refused: dict[int, CorruptRecordError] | None = None, offset: int | None = None,
    ) -> None:
        """Pause tp and keep its unhandled messages in memory until a retry hands them over.

        With no messages (a batch that could not be decoded), a retry fetches from offset again.
        """
        assert self.consumer is not None
        previous = self._held.get(tp) or self._refetching.pop(tp, None)
        delay = self._backoff(attempts)
        at = messages[0].offset if messages else offset
        assert at is not None
        self._held[tp] = _Held(at, messages, attempts, time.monotonic() + delay, reason, refused or {})
        self.consumer.pause(tp)
        if previous is None or previous.reason != reason:  # one line per state change
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
            if not held.messages:  # an undecodable batch: the next poll fetches it again
                self._refetching[tp] = self._held.pop(tp)
                self.consumer.resume(tp)
                continue
            failure = self._deliver_mixed(tp, self._route(tp), held.messages, held.refused)
            if failure is None:
                del self._held[tp]
                self.consumer.resume(tp)
                log.warning("resumed %s-%d after %d attempt(s)", tp.topic, tp.partition, held.attempts + 1)
            else:
                self._hold(tp, *failure, attempts=held.attempts + 1, refused=held.refused)

    # -- records the Kafka client cannot decode (rule 7) ---------------

    def _undecodable(self, failure: DecodeFailure) -> None:
        """Salvage the batch and move past the records it cannot decode, or hold the partition."""
        assert self.consumer is not None and self._decoder is not None
        tp = failure.tp
        if tp in self._held:
            return  # paused where the client stopped, so it meets the batch again once the partition resumes
        route = self._route(tp)
        step = undecodable.plan(failure, self._decoder.config, route.deserializer, time.time() * 1000.0)
        if isinstance(step, undecodable.Hold):
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
        self.stats.fetched += len(step.messages)
        if step.messages and self.monitor.listens("fetch"):
            self._fetched(tp, len(step.messages), step.messages[-1].offset)
        readable = [m for m in step.messages if m.offset not in step.refused]
        if readable and callbacks.declares(route, callbacks.AFTER_FETCH):
            callbacks.fire(callbacks.AFTER_FETCH, route, ParamsBatch(readable))
        unhandled = self._deliver_mixed(tp, route, step.messages, step.refused)
        if unhandled is not None:
            self._hold(tp, *unhandled, attempts=1, refused=step.refused)

    def _deliver_mixed(
        self, tp: TopicPartition, route: Route, messages: list[Params], refused: dict[int, CorruptRecordError]
    ) -> tuple[list[Params], str] | None:
        """_deliver, with each record the Kafka client refused dead-lettered in its place in the order."""
        start = 0
        for i, message in enumerate(messages):
            error = refused.get(message.offset)
            if error is None:
                continue
            failure = self._deliver(tp, route, messages[start:i])
            if failure is not None:
                return failure[0] + messages[i:], failure[1]
            problem = self._dead_letter_refused(tp, route, message, error)
            if problem is not None:
                return messages[i:], problem
            start = i + 1
        return self._deliver(tp, route, messages[start:])

    def _dead_letter_refused(
        self, tp: TopicPartition, route: Route, message: Params, error: CorruptRecordError
    ) -> str | None:
        """Dead-letter what could be read of an undecodable record; returns why not, if Kafka did not take it."""
        try:
            self.runtime.dead_letters.send(route.dead_letter_topic, message, error, 1, route.group_id)
        except Exception as exc:
            return f"dead letter of undecodable record {message.offset} not acknowledged: {type(exc).__name__}: {exc}"
        self.stats.dead_lettered += 1
        log.warning("%s-%d@%d cannot be decoded by the Kafka client (%s); dead-lettered what could be read of it "
                    "to %s and went on with the next record", tp.topic, tp.partition, message.offset,
                    undecodable.describe(error), route.dead_letter_topic)
        self.monitor.instrument("record.undecodable", group_id=self.group.id, topic=tp.topic, partition=tp.partition,
                                offset=message.offset, error=undecodable.describe(error), action="dead_lettered")
        if route.automatically_mark_as_consumed:
            self.offsets.mark(tp, message.offset)
        return None

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

    def summary(self) -> str:
        s = self.stats
        return (
            f"fetched={s.fetched} enqueued={s.enqueued} filtered={s.filtered} "
            f"dead_lettered={s.dead_lettered} held={len(self._held) + len(self._refetching)}"
        )


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, processor: GroupProcessor) -> None:
        self.processor = processor

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        if revoked:
            log.info("group %s: partitions revoked: %s", self.processor.group.id, _names(revoked))
            self.processor.on_revoked(revoked)
            self.processor.monitor.instrument("rebalance.revoked", group_id=self.processor.group.id,
                                              partitions=_pairs(revoked))

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("group %s: partitions assigned: %s", self.processor.group.id, _names(assigned) or "none")
        # Emitted even when empty: the member joined the group (a listener past the partition count gets none).
        self.processor.monitor.instrument("rebalance.assigned", group_id=self.processor.group.id,
                                          partitions=_pairs(assigned))


def _pairs(tps: Sequence[TopicPartition]) -> list[tuple[str, int]]:
    return [(tp.topic, tp.partition) for tp in sorted(tps)]


def _names(tps: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(tps))

