"""Producing to Kafka: produce(), produce_async() and flush(); WaterDrop's role in Karafka.

- One KafkaProducer per process, created on first use. kafka-python producers do not
  survive fork(), so a Celery prefork child (or a swarm node) builds its own after the
  fork, never sharing the parent's sockets and sender thread.
- Payloads are serialized with JSON unless a serializer is given; bytes pass through
  untouched and None is sent as a null value (a tombstone on a compacted topic).
- Route names are logical: the app's topic mapper turns them into Kafka names.
- Every failure reaches the caller as a ProduceError naming the topic and the cause:
  raised by produce(), or set on the future of produce_async().

Which app do the module-level kbridge.produce(), produce_async() and flush() use? The
default app: the KBridge configured last in this process (usually the only one), or the
one given to set_default_app(). app.produce() and friends name their app explicitly, and
a consumer's respond_with() uses the app that routed the consumer.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kafka import KafkaProducer

from .errors import KBridgeError
from .instrumentation import tracing
from .routing.names import name_problem

if TYPE_CHECKING:
    from .app import KBridge
    from .config import Settings
    from .instrumentation import Monitor

log = logging.getLogger("kbridge.producer")

Serializer = Callable[[Any], bytes]
Headers = Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]]
ProducerFactory = Callable[..., Any]  # KafkaProducer(**config), or a stand-in in tests

CLOSE_TIMEOUT = 10.0  # seconds close() waits for buffered messages before giving up on them


def json_serializer(value: Any) -> bytes:
    """The default serializer: compact UTF-8 JSON, which the default JSON deserializer of a route reads back."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ProduceError(KBridgeError):
    """Kafka did not take a message (or it could not even be built); names the topic and the cause."""

    def __init__(self, topic: str, cause: str, kafka_topic: str | None = None) -> None:
        self.topic = topic
        self.cause = cause
        self.kafka_topic = kafka_topic
        where = repr(topic) if kafka_topic in (None, topic) else f"{topic!r} (Kafka topic {kafka_topic!r})"
        super().__init__(f"could not produce to topic {where}: {cause}")


@dataclass(frozen=True)
class Delivery:
    """Where Kafka stored a message: topic is the logical name given, kafka_topic the mapped one."""

    topic: str
    kafka_topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Message:
    """A message encoded for Kafka but not yet sent; responders build all of theirs before sending any."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None


def encode(
    topic: str,
    payload: Any,
    key: str | bytes | None = None,
    headers: Headers | None = None,
    partition: int | None = None,
    serializer: Serializer | None = None,
) -> Message:
    """Check and encode one message; raises ProduceError listing every problem with it."""
    problems: list[str] = []
    if (p := name_problem("topic name", topic)) is not None:
        problems.append(p)
    value: bytes | None = None
    if isinstance(payload, (bytes, bytearray, memoryview)):
        value = bytes(payload)
    elif payload is not None:
        serialize = serializer or json_serializer
        try:
            value = serialize(payload)
        except Exception as exc:
            problems.append(f"{_name(serialize)} cannot serialize the payload: {type(exc).__name__}: {exc}")
        else:
            if not isinstance(value, bytes):
                problems.append(f"{_name(serialize)} returned {type(value).__name__}, not bytes")
                value = None
    raw_key = key.encode("utf-8") if isinstance(key, str) else key
    if raw_key is not None and not isinstance(raw_key, bytes):
        problems.append(f"key must be str, bytes or None, got {type(key).__name__}")
    if payload is None and raw_key is None:
        problems.append("a None payload is a tombstone and needs a key")
    if partition is not None and (not isinstance(partition, int) or isinstance(partition, bool) or partition < 0):
        problems.append(f"partition must be an integer >= 0 or None, got {partition!r}")
    encoded_headers = _headers(headers, problems)
    if problems:
        raise ProduceError(topic, "; ".join(problems))
    return Message(topic, value, raw_key, encoded_headers, partition)


def _headers(headers: Headers | None, problems: list[str]) -> tuple[tuple[str, bytes], ...]:
    if headers is None:
        return ()
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    out: list[tuple[str, bytes]] = []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            problems.append(f"headers must be a dict of str to str/bytes or a list of (str, value) pairs, got {pair!r}")
            continue
        name, value = pair
        if isinstance(value, str):
            out.append((name, value.encode("utf-8")))
        elif isinstance(value, bytes):
            out.append((name, value))
        else:
            problems.append(f"header {name!r} must be str or bytes, got {type(value).__name__}")
    return tuple(out)


def describe(exc: BaseException) -> str:
    """'Class: message', without the doubled class name kafka-python's errors print themselves."""
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))


class Producer:
    """One app's producing side: one lazily created KafkaProducer per process, with acks="all" by default.

    Thread-safe, like the KafkaProducer under it. Produced messages are at least once:
    a message whose acknowledgement did not arrive in time may still have been stored, so
    the caller's retry can duplicate it.
    """

    def __init__(
        self, settings: Settings, monitor: Monitor | None = None, factory: ProducerFactory | None = None
    ) -> None:
        """factory: builds the client from its config; None is kafka-python's KafkaProducer (a test passes a fake)."""
        self.settings = settings
        self.monitor = monitor
        self._factory = factory
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def created(self) -> bool:
        """Whether this process holds a live KafkaProducer (a swarm supervisor must not, before forking)."""
        return self._client is not None and self._pid == os.getpid()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                # Reaching Kafka and a topic's metadata take no longer, by default, than waiting for an ack.
                wait_ms = int(self.settings.produce_timeout * 1000)
                config = {
                    "acks": "all", "max_block_ms": wait_ms, "bootstrap_timeout_ms": wait_ms,
                    **self.settings.producer_config(),
                }
                self._client = (self._factory or KafkaProducer)(**config)
                self._pid = os.getpid()
            return self._client

    def produce(
        self,
        topic: str,
        payload: Any,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        *,
        serializer: Serializer | None = None,
        timeout: float | None = None,
    ) -> Delivery:
        """Send and wait for Kafka's acknowledgement (up to produce_timeout); raises ProduceError."""
        future = self.send(encode(topic, payload, key, headers, partition, serializer))
        return self.wait(future, topic, timeout)

    def produce_async(
        self,
        topic: str,
        payload: Any,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        *,
        serializer: Serializer | None = None,
    ) -> Future[Delivery]:
        """Send without waiting. The future resolves to a Delivery, or fails with a ProduceError.

        A payload that cannot be encoded raises ProduceError here: nothing was sent.
        """
        return self.send(encode(topic, payload, key, headers, partition, serializer))

    def send(self, message: Message) -> Future[Delivery]:
        """Hand an encoded message to Kafka; every Kafka failure ends up on the returned future."""
        future: Future[Delivery] = Future()
        future.set_running_or_notify_cancel()  # a message handed to Kafka cannot be called back
        try:
            kafka_topic = self.settings.topic_mapper.outgoing(message.topic)
        except Exception as exc:
            self._failed(future, message.topic, None, exc)
            return future
        headers = list(message.headers)
        tracing.inject(headers)  # the current trace context, if there is one
        try:
            sent = self._get_client().send(
                kafka_topic, value=message.value, key=message.key, headers=headers,
                partition=message.partition,
            )
        except Exception as exc:  # no metadata in time, an unknown partition, too large, a closed producer
            self._failed(future, message.topic, kafka_topic, exc)
            return future
        sent.add_callback(lambda md: self._acked(future, message.topic, kafka_topic, md))
        sent.add_errback(lambda exc: self._failed(future, message.topic, kafka_topic, exc))
        return future

    def wait(self, future: Future[Delivery], topic: str, timeout: float | None = None) -> Delivery:
        """The future's Delivery; a missing acknowledgement after timeout is a ProduceError too."""
        limit = self.settings.produce_timeout if timeout is None else timeout
        try:
            return future.result(limit)
        except FutureTimeout:
            raise ProduceError(
                topic, f"no acknowledgement from Kafka within {limit:g}s; it may still arrive, so a retry "
                "can duplicate the message", self._mapped(topic),
            ) from None

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message sent so far from this process is acknowledged or failed."""
        client = self._client
        if client is None or self._pid != os.getpid():
            return
        limit = self.settings.produce_timeout if timeout is None else timeout
        try:
            client.flush(timeout=limit)
        except Exception as exc:
            raise KBridgeError(f"flush: messages still unacknowledged after {limit:g}s: {describe(exc)}") from exc

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Flush and close this process's KafkaProducer; one inherited through fork is dropped, never closed."""
        with self._lock:
            client, pid = self._client, self._pid
            self._client = None
        if client is not None and pid == os.getpid():
            client.close(timeout=timeout)

    def _mapped(self, topic: str) -> str | None:
        try:
            return self.settings.topic_mapper.outgoing(topic)
        except Exception:
            return None

    def _acked(self, future: Future[Delivery], topic: str, kafka_topic: str, metadata: Any) -> None:
        delivery = Delivery(topic, kafka_topic, metadata.partition, metadata.offset)
        future.set_result(delivery)
        if self.monitor is not None and self.monitor.listens("produce"):
            self.monitor.instrument("produce", topic=topic, partition=delivery.partition, offset=delivery.offset)

    def _failed(self, future: Future[Delivery], topic: str, kafka_topic: str | None, exc: BaseException) -> None:
        error = ProduceError(topic, describe(exc), kafka_topic)
        error.__cause__ = exc
        future.set_exception(error)
        log.warning("%s", error)
        if self.monitor is not None and self.monitor.listens("produce.failed"):
            self.monitor.instrument("produce.failed", topic=topic, error=describe(exc))


# -- which app the module-level functions use ---------------------------------------------------

_default_app: weakref.ReferenceType[KBridge] | None = None
# The producer of the runtime running perform() on this thread, set by the perform runner's
# ProducingStage: respond_with() and kbridge.produce() inside perform() use the app that routed it.
_performing: ContextVar[Producer | None] = ContextVar("kbridge_performing_producer", default=None)


def register_app(app: KBridge) -> None:
    """Called when app is configured: it becomes the default app of kbridge.produce() outside perform()."""
    global _default_app
    _default_app = weakref.ref(app)


class producing_with:  # noqa: N801  (used like a contextmanager function)
    """Inside this block, produce() and respond_with() send through producer. Entered once per perform()."""

    __slots__ = ("producer", "token")

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def __enter__(self) -> None:
        self.token = _performing.set(self.producer)

    def __exit__(self, *exc: object) -> None:
        _performing.reset(self.token)


def current_producer() -> Producer:
    """Inside perform(): its runtime's producer. Elsewhere: the default app's."""
    producer = _performing.get()
    return producer if producer is not None else current_app().producer


def set_default_app(app: KBridge) -> None:
    """Make app the one kbridge.produce() uses, whichever KBridge was configured last."""
    register_app(app)


def current_app() -> KBridge:
    """The default app: the KBridge configured last in this process, or the one given to set_default_app()."""
    app = _default_app() if _default_app is not None else None
    if app is None:
        raise KBridgeError(
            "no KBridge app is configured in this process: create KBridge(client_id=..., kafka=...) first, "
            "or call app.produce(...) on your app"
        )
    return app


def produce(
    topic: str,
    payload: Any,
    key: str | bytes | None = None,
    headers: Headers | None = None,
    partition: int | None = None,
    *,
    serializer: Serializer | None = None,
) -> Delivery:
    """Send and wait for the acknowledgement; raises ProduceError. Inside perform(), through the app that
    routed it; elsewhere through the default app (the KBridge configured last, or set_default_app())."""
    return current_producer().produce(topic, payload, key, headers, partition, serializer=serializer)


def produce_async(
    topic: str,
    payload: Any,
    key: str | bytes | None = None,
    headers: Headers | None = None,
    partition: int | None = None,
    *,
    serializer: Serializer | None = None,
) -> Future[Delivery]:
    """produce() without waiting: a future resolving to a Delivery or failing with ProduceError."""
    return current_producer().produce_async(topic, payload, key, headers, partition, serializer=serializer)


def flush(timeout: float | None = None) -> None:
    """Wait for every message this process sent through the current producer (see produce())."""
    current_producer().flush(timeout)
