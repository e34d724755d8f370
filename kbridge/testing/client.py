"""An in-memory test client: publish to a route, run its filters and perform(), no Kafka and no Celery.

karafka-testing's publish_for_karafka, for kbridge. One publish() (or publish_many()) is
one simulated poll of one partition, and goes through what the listener and the worker
would do with it, in process and at once:

- the route's deserializer reads the payload lazily, as in production;
- before_poll, after_fetch and after_poll callbacks fire around the poll, and stop()
  fires before_stop (callbacks that raise are logged and collected, never fatal);
- before_enqueue filters run per message; a filter that raises, or a payload it cannot
  read, dead-letters the message;
- accepted messages are split into runs as the route says (one per message, or batches of
  at most max_batch_size with batch_consuming). On celery routes each run goes through the
  task wire format (JSON), so what perform() sees is what a worker would see;
- perform() runs in the same runner as in a worker (kbridge.perform): perform hooks, the
  topic's timeout, after_failure(exc) on every failure, retries up to max_retries (without
  the backoff sleeps), then the dead-letter topic. Dead letters are captured in memory, with the
  headers kbridge would send, never produced;
- offsets: what the listener would commit afterwards, including mark_as_consumed() on
  topics with automatically_mark_as_consumed=False.

What it cannot show: Kafka and Celery themselves (rebalances, broker outages, ordering
across workers). The real-broker fixtures of kbridge.testing.pytest_plugin cover those.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kafka import TopicPartition

from .. import callbacks
from ..config import Settings
from ..consumer import BaseConsumer
from ..dlq import Failure, dead_letter_headers
from ..errors import KBridgeError
from ..interchange import from_wire, to_wire
from ..listener.offsets import OffsetTracker
from ..listener.processor import Stats
from ..listener.steps import Chain, Fetched, Hold, PartitionBatch, Step, StepContext, build_chain
from ..listener.steps.breaker import BreakerStep
from ..params import Params, ParamsBatch, carried
from ..perform import DeadLettered, DeadLetterPending, Job, Outcome, PerformRunner, Retry, Stage, build_runner
from ..producer import Producer
from ..routing import ConsumerGroup
from ..runtime import Runtime

if TYPE_CHECKING:
    from ..app import KBridge
    from ..routing.route import Route


@dataclass(frozen=True)
class DeadLetter:
    """A message the listener or worker would have sent to topic, with these headers."""

    topic: str
    params: Params
    error: BaseException | Failure  # the exception itself; a Failure only for a letter retried on its own
    attempts: int
    headers: list[tuple[str, bytes | None]]


@dataclass
class Run:
    """One perform() run: one message, or one batch, with every attempt it took."""

    params_batch: ParamsBatch
    consumer: BaseConsumer  # the instance of the last attempt
    attempts: int
    errors: list[BaseException]  # one per failed attempt, as after_failure(exc) saw it
    dead_lettered: bool
    attempt_consumers: list[BaseConsumer] = field(default_factory=list)  # every attempt's instance, in order


@dataclass
class Result:
    """What one publish did. Lists keep offset order."""

    route: Route
    messages: list[Params]
    performed: list[Params] = field(default_factory=list)  # their perform() run completed
    filtered: list[Params] = field(default_factory=list)  # a before_enqueue filter returned falsy
    dead_lettered: list[DeadLetter] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    marked: list[Params] = field(default_factory=list)  # mark_as_consumed() calls on a manual topic
    committed: int | None = None  # the partition's committed offset afterwards (None: nothing committed yet)
    callback_errors: list[Exception] = field(default_factory=list)

    @property
    def consumer(self) -> BaseConsumer:
        """The consumer instance of the last perform() run, to inspect what perform() did."""
        if not self.runs:
            raise KBridgeError(
                f"no perform() ran for {self.route.shadow}: filtered={len(self.filtered)} "
                f"dead_lettered={len(self.dead_lettered)}"
            )
        return self.runs[-1].consumer

    @property
    def consumers(self) -> list[BaseConsumer]:
        return [run.consumer for run in self.runs]

    @property
    def errors(self) -> list[BaseException]:
        """Every failure perform() raised, retries included, in order."""
        return [exc for run in self.runs for exc in run.errors]


class TestClient:
    """Feeds messages to an app's routes in memory. Needs the app's routing only, not its services."""

    __test__ = False  # a helper, not a test class, for pytest's collection

    def __init__(self, app: KBridge) -> None:
        self.app = app
        self.dead_letters: list[DeadLetter] = []  # every dead letter of this client, in order
        self._next_offset: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, str, int], int] = {}  # (group_id, topic, partition) -> offset
        self._listeners: dict[str, _GroupListener] = {}  # group name -> its chain and offsets
        self._current: Result | None = None  # the publish in progress
        self._recorder = _AttemptRecorder()
        self._runner: PerformRunner | None = None  # the worker's runner, built on first use
        self._runner_producer: Producer | None = None

    # -- publishing ----------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: Any = None,
        *,
        key: bytes | str | None = None,
        headers: dict[str, bytes | None] | None = None,
        partition: int = 0,
        group: str | None = None,
    ) -> Result:
        """Deliver one message. payload: bytes as they are, str as UTF-8, None as a tombstone, else JSON.

        group: the consumer group's name, needed only when several groups route topic.
        """
        return self.publish_many(topic, [payload], key=key, headers=headers, partition=partition, group=group)

    def publish_many(
        self,
        topic: str,
        payloads: Iterable[Any],
        *,
        key: bytes | str | None = None,
        headers: dict[str, bytes | None] | None = None,
        partition: int = 0,
        group: str | None = None,
    ) -> Result:
        """Deliver messages as one polled batch of one partition, at the partition's next offsets."""
        route = self.route(topic, group)
        messages = [self._message(route, topic, raw, key, headers, partition) for raw in map(encode, payloads)]
        result = Result(route, messages)
        group_routes = self._group_routes(route)
        result.callback_errors += callbacks.fire_all(
            callbacks.BEFORE_POLL, callbacks.per_consumer_class(group_routes, callbacks.BEFORE_POLL)
        )
        listener = self._listener(route)
        self._current = result
        try:
            hold = listener.chain.take(Fetched(TopicPartition(topic, partition), messages=messages))
            while hold is not None and hold.until is not None and not _breaker(hold):  # delay_by, throttle: wait
                time.sleep(max(0.0, hold.until - time.monotonic()))
                hold = Chain.resume(hold.pending)
        finally:
            self._current = None
        if hold is not None:  # the in-memory backend and dead-letter sink never refuse
            raise KBridgeError(f"the listener's chain held {route.shadow}: {hold.reason}")
        if not route.automatically_mark_as_consumed:
            result.marked = [p for run in result.runs for consumer in run.attempt_consumers for p in consumer.marked]
        result.committed = self._commit(listener, route, topic, partition)
        result.callback_errors += callbacks.fire_all(
            callbacks.AFTER_POLL, callbacks.per_consumer_class(group_routes, callbacks.AFTER_POLL)
        )
        return result

    def tick(self, topic: str, partition: int = 0, group: str | None = None) -> BaseConsumer:
        """Run the route's tick() for a partition (tick_interval) as a worker would; the consumer it ran on.

        What tick() raised is raised here, after after_failure(exc) ran.
        """
        route = self.route(topic, group)
        if route.tick_interval is None:
            raise KBridgeError(f"{route.shadow} has no tick_interval; it never ticks")
        job = Job(route, ParamsBatch([]), tick=TopicPartition(topic, partition))
        error = self._worker_runner().tick(job)
        if error is not None:
            raise error
        assert job.consumer is not None
        return job.consumer

    def stop(self) -> list[Exception]:
        """Fire before_stop, once per consumer class of every group, as stopping listeners would."""
        errors: list[Exception] = []
        for group in self.app.routes.groups.values():
            errors += callbacks.fire_all(
                callbacks.BEFORE_STOP, callbacks.per_consumer_class(group.routes(), callbacks.BEFORE_STOP)
            )
        return errors

    def committed(self, topic: str, partition: int = 0, group: str | None = None) -> int | None:
        """The offset the listener would have committed for the partition (None: nothing yet)."""
        route = self.route(topic, group)
        return self._committed.get((route.group_id, topic, partition))

    def route(self, topic: str, group: str | None = None) -> Route:
        found = [r for g in self.app.routes.groups.values() if group is None or g.name == group
                 for r in [_route_in(g, topic)] if r is not None]
        if len(found) == 1:
            return found[0]
        routed = sorted(f"{r.group_name}/{r.name}" for r in self.app.routes)
        if not found:
            where = f" in consumer group {group!r}" if group is not None else ""
            raise KBridgeError(f"topic {topic!r} is not routed{where}; routes: {', '.join(routed) or 'none'}")
        groups = ", ".join(sorted(r.group_name for r in found))
        raise KBridgeError(f"topic {topic!r} is routed in several consumer groups ({groups}); pass group=")

    # -- the listener's part -------------------------------------------------------------------

    def _message(
        self, route: Route, topic: str, raw: bytes | None, key: bytes | str | None,
        headers: dict[str, bytes | None] | None, partition: int,
    ) -> Params:
        offset = self._next_offset.get((topic, partition), 0)
        self._next_offset[(topic, partition)] = offset + 1
        now_ms = time.time() * 1000.0
        return Params(
            topic=topic, partition=partition, offset=offset, raw_payload=raw,
            key=key.encode("utf-8") if isinstance(key, str) else key, headers=dict(headers or {}),
            timestamp_ms=now_ms, receive_time_ms=now_ms, deserializer=route.deserializer,
        )

    def _group_routes(self, route: Route) -> list[Route]:
        return self.app.routes.groups[route.group_name].routes()

    def _listener(self, route: Route) -> _GroupListener:
        """The listener's own chain of steps for route's group, over this client's in-memory services."""
        if route.group_name not in self._listeners:
            group = self.app.routes.groups[route.group_name]
            runtime = Runtime(settings=self._settings(), routes=self.app.routes, monitor=self.app.monitor,
                              producer=self._producer(), dead_letters=_CapturingSink(self),
                              perform_hooks=self.app.perform_hooks)
            memory = _InMemoryBackend(self)
            for name in {r.backend for r in group.routes()}:
                runtime.install_backend(name, memory)
            stats, offsets = Stats(), OffsetTracker()
            context = StepContext(group.id, runtime, stats, offsets)
            chain = build_chain(context, group.route_for, tail=[_Collect(self)])
            self._listeners[route.group_name] = _GroupListener(chain, offsets)
        return self._listeners[route.group_name]

    def _settings(self) -> Settings:
        if self.app.configured:
            return self.app.settings
        return Settings.build({"client_id": self.app.client_id, "kafka": {"bootstrap_servers": "in-memory"}})

    def _producer(self) -> Producer:
        """The app's producer; an app without Kafka settings gets one that says so when perform() produces."""
        return self.app.producer if self.app.configured else Producer(self._settings(), factory=_no_kafka)

    def _commit(self, listener: _GroupListener, route: Route, topic: str, partition: int) -> int | None:
        """What the listener would commit: every handled offset; on a manual topic only up to the highest mark."""
        key = (route.group_id, topic, partition)
        pending = listener.offsets.pending()
        listener.offsets.committed(pending)
        offset = pending.get(TopicPartition(topic, partition))
        if offset is not None:
            self._committed[key] = max(self._committed.get(key, 0), offset)
        return self._committed.get(key)

    # -- the worker's part ---------------------------------------------------------------------

    @staticmethod
    def _over_the_wire(route: Route, unit: Sequence[Params]) -> Sequence[Params]:
        """Celery routes: through the JSON task format, so perform() sees what a worker would."""
        if route.backend != "celery":
            return unit
        wire = json.loads(json.dumps([to_wire(p) for p in unit]))
        rebuilt = [from_wire(m, route.deserializer) for m in wire]
        rebuilt[0].carrier = carried(unit[0])  # what the task message's headers carry (trace context)
        return rebuilt

    def _perform(self, route: Route, batch: ParamsBatch, result: Result) -> None:
        """The worker's runner with an in-memory dead-letter sink, retrying at once instead of after a backoff."""
        recorder = self._recorder
        recorder.reset()
        outcome = self._worker_runner().run(Job(route, batch), _AtOnce())
        dead = isinstance(outcome, DeadLettered)
        assert recorder.consumer is not None
        result.runs.append(Run(batch, recorder.consumer, recorder.attempts, recorder.errors, dead_lettered=dead,
                               attempt_consumers=recorder.consumers))
        if not dead:
            result.performed.extend(batch)

    def _worker_runner(self) -> PerformRunner:
        producer = self._producer()
        if self._runner is None or self._runner_producer is not producer:  # the app may be configured later
            self._runner = build_runner(_CapturingSink(self), hooks=self.app.perform_hooks,
                                        producer=producer, enforce_timeout=True, extra=[self._recorder])
            self._runner_producer = producer
        return self._runner

    def _dead_letter(
        self, topic: str, params: Params, error: BaseException | Failure, attempts: int, group_id: str
    ) -> None:
        letter = DeadLetter(topic, params, error, attempts, dead_letter_headers(params, error, attempts, group_id))
        self.dead_letters.append(letter)
        if self._current is not None:
            self._current.dead_lettered.append(letter)


class _AttemptRecorder(Stage):
    """Keeps each attempt's consumer and error, for Run."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Before each run: what follows is that run's."""
        self.consumer: BaseConsumer | None = None
        self.consumers: list[BaseConsumer] = []
        self.attempts = 0
        self.errors: list[BaseException] = []

    def around(self, job: Job) -> None:
        self.consumer, self.attempts = job.consumer, job.attempt
        if job.consumer is not None:
            self.consumers.append(job.consumer)
        return None

    def on_failure(self, job: Job, error: BaseException) -> Outcome | None:
        self.errors.append(error)
        return None


class _CapturingSink:
    """Dead letters kept in memory with the headers kbridge would send; never produced."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def send(self, topic: str, params: Params, error: BaseException | Failure, attempts: int, group_id: str) -> None:
        self.client._dead_letter(topic, params, error, attempts, group_id)

    def send_unroutable(self, body: dict[str, Any], error: BaseException | Failure, task_id: str | None) -> str:
        raise KBridgeError(f"TestClient sends no task, so none is refused: {error}")


class _InMemoryBackend:
    """Stands in for every backend: each run goes through the task wire format (celery routes) and the runner."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def enqueue(self, route: Route, messages: Sequence[Params]) -> None:
        result = self.client._current
        assert result is not None
        for unit in route.units(messages):
            self.client._perform(route, ParamsBatch(self.client._over_the_wire(route, unit)), result)

    def housekeeping(self) -> None:
        return None

    def close(self) -> None:
        return None


class _Collect(Step):
    """The chain's last step here: what the filters rejected, and the after_fetch callbacks' errors."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self.client = client

    def submit(self, batch: PartitionBatch) -> None:
        result = self.client._current
        assert result is not None
        result.filtered.extend(batch.filtered)
        result.callback_errors.extend(batch.callback_errors)


@dataclass
class _GroupListener:
    chain: Chain
    offsets: OffsetTracker


def _breaker(hold: Hold) -> bool:
    """A hold of the dead-letter breaker: a test should see it at once, not sit out the cooldown."""
    return any(isinstance(p.step, BreakerStep) for p in hold.pending)


def _route_in(group: ConsumerGroup, topic: str) -> Route | None:
    """topic's route in group (its own, else a matching pattern route), or None."""
    try:
        return group.route_for(topic)
    except KeyError:
        return None


def _no_kafka(**config: Any) -> Any:
    raise KBridgeError("this app has no Kafka settings (KBridge(kafka=...)), so perform() cannot produce here")


class _AtOnce:
    """Retries run at once, without the backoff sleeps; the in-memory sink always takes a letter."""

    def perform_again(self, job: Job, retry: Retry) -> None:
        return None

    def dead_letter_again(self, job: Job, pending: DeadLetterPending) -> None:
        raise pending.cause


def encode(payload: Any) -> bytes | None:
    """What a producer would have written: bytes as they are, str as UTF-8, None as a tombstone, else JSON."""
    if payload is None or isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload).encode("utf-8")
