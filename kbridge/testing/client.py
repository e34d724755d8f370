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

from .. import callbacks
from ..consumer import BaseConsumer, collecting_marks
from ..dlq import Failure, dead_letter_headers
from ..errors import KBridgeError
from ..interchange import from_wire, to_wire
from ..params import Params, ParamsBatch
from ..perform import DeadLettered, DeadLetterPending, Job, Outcome, Retry, Stage, build_runner

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
        messages = [self._message(route, raw, key, headers, partition) for raw in map(encode, payloads)]
        result = Result(route, messages)
        group_routes = self._group_routes(route)
        result.callback_errors += callbacks.fire_all(
            callbacks.BEFORE_POLL, callbacks.per_consumer_class(group_routes, callbacks.BEFORE_POLL)
        )
        if messages:
            result.callback_errors += callbacks.fire(callbacks.AFTER_FETCH, route, ParamsBatch(messages))
        accepted = [m for m in messages if self._accepts(route, m, result)]
        with collecting_marks(result.marked.append):
            for unit in route.units(accepted):
                self._perform(route, ParamsBatch(self._over_the_wire(route, unit)), result)
        result.committed = self._commit(route, partition, messages, result.marked)
        result.callback_errors += callbacks.fire_all(
            callbacks.AFTER_POLL, callbacks.per_consumer_class(group_routes, callbacks.AFTER_POLL)
        )
        return result

    def stop(self) -> list[Exception]:
        """Fire before_stop, once per consumer class of every group, as stopping listeners would."""
        errors: list[Exception] = []
        for group in self.app.routes.groups.values():
            errors += callbacks.fire_all(
                callbacks.BEFORE_STOP, callbacks.per_consumer_class(group.topics.values(), callbacks.BEFORE_STOP)
            )
        return errors

    def committed(self, topic: str, partition: int = 0, group: str | None = None) -> int | None:
        """The offset the listener would have committed for the partition (None: nothing yet)."""
        route = self.route(topic, group)
        return self._committed.get((route.group_id, route.name, partition))

    def route(self, topic: str, group: str | None = None) -> Route:
        found = [r for r in self.app.routes if r.name == topic and (group is None or r.group_name == group)]
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
        self, route: Route, raw: bytes | None, key: bytes | str | None, headers: dict[str, bytes | None] | None,
        partition: int,
    ) -> Params:
        offset = self._next_offset.get((route.name, partition), 0)
        self._next_offset[(route.name, partition)] = offset + 1
        now_ms = time.time() * 1000.0
        return Params(
            topic=route.name, partition=partition, offset=offset, raw_payload=raw,
            key=key.encode("utf-8") if isinstance(key, str) else key, headers=dict(headers or {}),
            timestamp_ms=now_ms, receive_time_ms=now_ms, deserializer=route.deserializer,
        )

    def _group_routes(self, route: Route) -> list[Route]:
        return list(self.app.routes.groups[route.group_name].topics.values())

    def _accepts(self, route: Route, message: Params, result: Result) -> bool:
        """The listener's filter step: falsy filters, and raising ones dead-letter at once (attempts 1)."""
        try:
            accepted = route.consumer(route, ParamsBatch([message])).run_filters()
        except Exception as exc:
            self._dead_letter(route, message, exc, 1, result)
            return False
        if not accepted:
            result.filtered.append(message)
        return accepted

    def _commit(self, route: Route, partition: int, messages: list[Params], marked: list[Params]) -> int | None:
        """Everything handled is committed; on a manual topic only up to the highest mark (Karafka-style)."""
        key = (route.group_id, route.name, partition)
        if route.automatically_mark_as_consumed:
            candidates = [m.offset + 1 for m in messages]
        else:
            candidates = [m.offset + 1 for m in marked if m.partition == partition]
        if candidates:
            self._committed[key] = max(self._committed.get(key, 0), *candidates)
        return self._committed.get(key)

    # -- the worker's part ---------------------------------------------------------------------

    @staticmethod
    def _over_the_wire(route: Route, unit: Sequence[Params]) -> Sequence[Params]:
        """Celery routes: through the JSON task format, so perform() sees what a worker would."""
        if route.backend != "celery":
            return unit
        wire = json.loads(json.dumps([to_wire(p) for p in unit]))
        return [from_wire(m, route.deserializer) for m in wire]

    def _perform(self, route: Route, batch: ParamsBatch, result: Result) -> None:
        """The worker's runner with an in-memory dead-letter sink, retrying at once instead of after a backoff."""
        recorder = _AttemptRecorder()
        sink = _CapturingSink(self, result)
        producer = self.app.producer if self.app.configured else None
        runner = build_runner(sink, hooks=self.app.perform_hooks, producer=producer, enforce_timeout=True,
                              extra=[recorder])
        outcome = runner.run(Job(route, batch), _AtOnce())
        dead = isinstance(outcome, DeadLettered)
        assert recorder.consumer is not None
        result.runs.append(Run(batch, recorder.consumer, recorder.attempts, recorder.errors, dead_lettered=dead))
        if not dead:
            result.performed.extend(batch)

    def _dead_letter(
        self, route: Route, params: Params, error: BaseException | Failure, attempts: int, result: Result,
        topic: str | None = None,
    ) -> None:
        letter = DeadLetter(
            topic or route.dead_letter_topic, params, error, attempts,
            dead_letter_headers(params, error, attempts, route.group_id),
        )
        self.dead_letters.append(letter)
        result.dead_lettered.append(letter)


class _AttemptRecorder(Stage):
    """Keeps each attempt's consumer and error, for Run."""

    def __init__(self) -> None:
        self.consumer: BaseConsumer | None = None
        self.attempts = 0
        self.errors: list[BaseException] = []

    def around(self, job: Job) -> None:
        self.consumer, self.attempts = job.consumer, job.attempt
        return None

    def on_failure(self, job: Job, error: BaseException) -> Outcome | None:
        self.errors.append(error)
        return None


class _CapturingSink:
    """Dead letters kept in memory with the headers kbridge would send; never produced."""

    def __init__(self, client: TestClient, result: Result) -> None:
        self.client, self.result = client, result

    def send(self, topic: str, params: Params, error: BaseException | Failure, attempts: int, group_id: str) -> None:
        route = self.result.route
        self.client._dead_letter(route, params, error, attempts, self.result, topic)

    def send_unroutable(self, body: dict[str, Any], error: BaseException | Failure, task_id: str | None) -> str:
        raise KBridgeError(f"TestClient sends no task, so none is refused: {error}")


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
