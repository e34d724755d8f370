"""One consumer group's loop: poll -> route -> filter -> enqueue -> commit, all on one thread.

kafka-python consumers are not thread-safe, so polling, committing and the
rebalance callbacks all happen on the thread that runs GroupProcessor.run().
A partition whose message cannot be handed over is paused and retried with
backoff; it never advances past that message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import tenacity
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from ..errors import ConfigError, EnqueueError
from ..interchange import params_from_record
from ..params import Params, ParamsBatch
from ..routing import ConsumerGroup, Topic
from .offsets import OffsetTracker

if TYPE_CHECKING:
    from ..app import KBridge

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


@dataclass
class _Held:
    messages: list[Params]
    attempts: int
    retry_at: float
    reason: str


class GroupProcessor:
    def __init__(self, app: KBridge, group: ConsumerGroup, stop: threading.Event) -> None:
        self.app = app
        self.group = group
        self.stop = stop
        self.stats = Stats()
        self.offsets = OffsetTracker()
        self._held: dict[TopicPartition, _Held] = {}
        self._wait = tenacity.wait_exponential_jitter(multiplier=0.5, max=app.settings.enqueue_backoff_max, jitter=0.5)
        self.consumer: KafkaConsumer | None = None
        self._commit_failing = False
        self._next_housekeeping = 0.0

    # -- lifecycle -------------------------------------------------------

    def run(self) -> None:
        self.consumer = self._connect_with_backoff()
        if self.consumer is None:
            return  # stopped while Kafka was unreachable
        self.consumer.subscribe(topics=list(self.group.topics), listener=_Rebalance(self))
        log.info("consumer group %s listening to %s", self.group.id, ", ".join(self.group.topics))
        try:
            while not self.stop.is_set():
                self.tick()
        finally:
            self._shutdown()

    def tick(self) -> None:
        assert self.consumer is not None
        self._retry_held()
        settings = self.app.settings
        polled = self.consumer.poll(
            timeout_ms=int(settings.poll_timeout * 1000), max_records=settings.max_poll_records
        )
        now_ms = time.time() * 1000.0
        for tp, records in polled.items():
            route = self.group.topics[tp.topic]
            self.stats.fetched += len(records)
            self._handle(tp, route, [params_from_record(r, route.deserializer, now_ms) for r in records])
        self.commit()
        if time.monotonic() >= self._next_housekeeping:
            self._housekeeping()

    def _housekeeping(self) -> None:
        """Backend chores off the hot path, e.g. re-queueing tasks a Redis broker lost."""
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        for name in {t.backend for t in self.group.topics.values()}:
            chore = getattr(self.app.backend(name), "housekeeping", None)
            if chore is None:
                continue
            try:
                chore()
            except Exception as exc:  # the broker may be down; enqueueing reports that already
                log.debug("housekeeping of backend %s failed: %s", name, exc)

    def _connect_with_backoff(self) -> KafkaConsumer | None:
        """Kafka down at start is a state to wait out with backoff, not a crash loop."""
        attempts = 0
        while not self.stop.is_set():
            try:
                consumer = self._connect()
            except (KafkaTimeoutError, KafkaConnectionError):
                attempts += 1
                delay = self._backoff(attempts)
                if attempts == 1 or attempts % 10 == 0:
                    log.warning(
                        "consumer group %s: no Kafka broker reachable at %s (attempt %d); retrying in %.1fs",
                        self.group.id, self.app.settings.kafka.get("bootstrap_servers"), attempts, delay,
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
            **{"bootstrap_timeout_ms": 5000, **self.app.settings.consumer_config()},
            group_id=self.group.id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if starts.pop() else "latest",
        )

    def _shutdown(self) -> None:
        if self.consumer is None:
            return
        try:
            self.commit()
        finally:
            self.consumer.close(autocommit=False)  # leaves the group
            log.info("consumer group %s stopped: %s", self.group.id, self.summary())

    # -- handling --------------------------------------------------------

    def _handle(self, tp: TopicPartition, route: Topic, messages: list[Params]) -> None:
        failure = self._deliver(tp, route, messages)
        if failure is not None:
            self._hold(tp, *failure, attempts=1)

    def _deliver(
        self, tp: TopicPartition, route: Topic, messages: list[Params]
    ) -> tuple[list[Params], str] | None:
        """Filter, then hand the accepted messages over in one backend call, marking what is handled.

        Filtering stops at a message whose dead letter Kafka did not acknowledge; what
        came before it is still handed over. Returns the messages not handled and why,
        or None when all were.
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
        try:
            if accepted:
                self.app.backend(route.backend).enqueue(route, [messages[i] for i in accepted])
        except Exception as exc:
            confirmed = exc.confirmed if isinstance(exc, EnqueueError) else 0
            self.stats.enqueued += confirmed
            end, problem = accepted[confirmed], f"{type(exc).__name__}: {exc}"
        else:
            self.stats.enqueued += len(accepted)
        if end:
            self.offsets.mark(tp, messages[end - 1].offset)
        return (messages[end:], problem) if end < len(messages) else None

    def _accepts(self, route: Topic, message: Params) -> bool:
        """Run the filters. A filter that raises dead-letters the message (rule 5): not dropped, not retried."""
        if not route.consumer._filters:
            return True
        try:
            accepted = route.consumer(route, ParamsBatch([message])).run_filters()
        except Exception as exc:
            self.app.dead_letters.send(route.dead_letter_topic, message, exc, 1, route.group_id)
            self.stats.dead_lettered += 1
            return False
        if not accepted:
            self.stats.filtered += 1
        return accepted

    # -- holding and retrying -------------------------------------------

    def _hold(self, tp: TopicPartition, messages: list[Params], reason: str, attempts: int) -> None:
        """Pause tp and keep its unhandled messages in memory until a retry hands them over."""
        assert self.consumer is not None
        previous = self._held.get(tp)
        delay = self._backoff(attempts)
        self._held[tp] = _Held(messages, attempts, time.monotonic() + delay, reason)
        self.consumer.pause(tp)
        if previous is None or previous.reason != reason:  # one line per state change
            log.warning(
                "paused %s-%d at offset %d: %s; retrying with backoff (next in %.1fs)",
                tp.topic, tp.partition, messages[0].offset, reason, delay,
            )

    def _retry_held(self) -> None:
        assert self.consumer is not None
        now = time.monotonic()
        for tp, held in list(self._held.items()):
            if held.retry_at > now:
                continue
            failure = self._deliver(tp, self.group.topics[tp.topic], held.messages)
            if failure is None:
                del self._held[tp]
                self.consumer.resume(tp)
                log.warning("resumed %s-%d after %d attempt(s)", tp.topic, tp.partition, held.attempts + 1)
            else:
                self._hold(tp, *failure, attempts=held.attempts + 1)

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

    def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.commit(list(revoked))
        self.offsets.forget(revoked)
        for tp in revoked:
            self._held.pop(tp, None)

    def summary(self) -> str:
        s = self.stats
        return (
            f"fetched={s.fetched} enqueued={s.enqueued} filtered={s.filtered} "
            f"dead_lettered={s.dead_lettered} held={len(self._held)}"
        )


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, processor: GroupProcessor) -> None:
        self.processor = processor

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        if revoked:
            log.info("group %s: partitions revoked: %s", self.processor.group.id, _names(revoked))
            self.processor.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("group %s: partitions assigned: %s", self.processor.group.id, _names(assigned) or "none")


def _names(tps: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(tps))

