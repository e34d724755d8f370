"""Responders (Karafka 1.x): a class that declares the topics it produces to, and is checked before it sends.

    class OrderResponder(Responder):
        topics = ["confirmations", ResponderTopic("audit", required=False, delivery="async")]

        def respond(self, order):
            self.respond_to("confirmations", {"id": order["id"]}, key=str(order["id"]))

    OrderResponder(app).call(order)          # or, in a consumer routed with responder=OrderResponder:
    self.respond_with(order)

respond_to() only buffers. After respond() returns, the usage is validated: every
required topic used, no topic used that was not declared, no topic used twice unless
declared with multiple_usage=True. Every message is then serialized. Any problem is
raised as one ResponderError listing all of them, and nothing at all is sent: a
half-sent response is the failure responders exist to prevent. Only then are the
messages sent, in the order they were buffered, and the "sync" ones waited for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import ConfigError, KBridgeError
from .producer import Delivery, Headers, Message, ProduceError, Serializer, current_producer, encode
from .routing.names import name_problem

if TYPE_CHECKING:
    from .app import KBridge
    from .consumer import BaseConsumer

DELIVERIES = ("sync", "async")


@dataclass(frozen=True)
class ResponderTopic:
    """One topic a responder may produce to.

    required: respond() must use it on every call.
    delivery: "sync" waits for Kafka's acknowledgement (at least once: the caller, e.g. a
        Celery task, fails and retries if it does not come); "async" hands the message to
        the producer and returns, trading that guarantee for speed.
    serializer: object -> bytes for this topic's payloads; JSON by default, bytes untouched.
    multiple_usage: respond_to() may use it more than once per call (e.g. once per message
        of a batch); without it a second use is a mistake worth catching.
    """

    name: str
    required: bool = True
    delivery: str = "sync"
    serializer: Serializer | None = None
    multiple_usage: bool = False

    def problems(self) -> list[str]:
        found = []
        if (p := name_problem("topic name", self.name)) is not None:
            found.append(p)
        for key in ("required", "multiple_usage"):
            if not isinstance(getattr(self, key), bool):
                found.append(f"topic {self.name!r}: {key} must be True or False, got {getattr(self, key)!r}")
        if self.delivery not in DELIVERIES:
            found.append(f"topic {self.name!r}: delivery must be 'sync' or 'async', got {self.delivery!r}")
        if self.serializer is not None and not callable(self.serializer):
            found.append(f"topic {self.name!r}: serializer must be a callable (object -> bytes), "
                         f"got {self.serializer!r}")
        return found


class ResponderError(KBridgeError):
    """A responder's call broke its declaration, or a message could not be encoded; nothing was sent."""

    def __init__(self, responder: str, problems: Iterable[str]) -> None:
        self.responder = responder
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{responder} sent nothing: {len(self.problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class Pending:
    """A respond_to() call, kept as given until the usage is validated."""

    topic: str
    data: Any
    key: str | bytes | None = None
    headers: Headers | None = None
    partition: int | None = None


class Responder:
    """Subclass it, declare `topics` and implement respond(); see the module docstring."""

    # Declared as a list of names and ResponderTopic; read as a read-only name -> ResponderTopic mapping.
    topics: ClassVar[Mapping[str, ResponderTopic]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "topics" in vars(cls):  # a subclass that declares nothing keeps its parent's topics
            cls.topics = _declared(cls.__name__, vars(cls)["topics"])

    def __init__(self, app: KBridge | None = None) -> None:
        """app: whose producer and topic mapper to use; None: inside perform(), the app that routed it,
        elsewhere the default app (kbridge.producer.current_producer())."""
        self.app = app
        self.messages: list[Pending] = []

    def respond(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement respond()")

    def respond_to(
        self,
        topic: str,
        data: Any,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        """Buffer one message; it is sent only if the whole call validates."""
        self.messages.append(Pending(topic, data, key, headers, partition))

    def call(self, *args: Any, **kwargs: Any) -> list[Future[Delivery]]:
        """respond(*args, **kwargs), validate, encode, then send.

        Returns one future per message, in respond_to() order; those of "sync" topics are
        already resolved. Raises ResponderError (nothing sent) or ProduceError (a "sync"
        message was not acknowledged; others may have been).
        """
        self.messages = []
        self.respond(*args, **kwargs)
        problems = self.usage_problems()
        encoded = self._encode(problems)
        if problems:
            raise ResponderError(type(self).__name__, problems)
        return self._send(encoded)

    def usage_problems(self) -> list[str]:
        """Every way the buffered messages break the declaration (Karafka's usage validation)."""
        declared = type(self).topics
        problems = []
        used: dict[str, int] = {}
        for m in self.messages:
            used[m.topic] = used.get(m.topic, 0) + 1
        for name, spec in declared.items():
            if spec.required and name not in used:
                problems.append(f"required topic {name!r} was not used; respond_to({name!r}, ...) on every call, "
                                "or declare it with required=False")
        for name, count in used.items():
            if name not in declared:
                problems.append(f"topic {name!r} is not declared in {type(self).__name__}.topics "
                                f"(declared: {', '.join(declared) or 'none'})")
            elif count > 1 and not declared[name].multiple_usage:
                problems.append(f"topic {name!r} was used {count} times; declare it with multiple_usage=True "
                                "to send more than one message to it per call")
        return problems

    def _encode(self, problems: list[str]) -> list[Message]:
        declared = type(self).topics
        encoded = []
        for i, m in enumerate(self.messages):
            serializer = declared[m.topic].serializer if m.topic in declared else None
            try:
                encoded.append(encode(m.topic, m.data, m.key, m.headers, m.partition, serializer))
            except ProduceError as exc:
                problems.append(f"message {i + 1} to {m.topic!r}: {exc.cause}")
        return encoded

    def _send(self, encoded: list[Message]) -> list[Future[Delivery]]:
        producer = self.app.producer if self.app is not None else current_producer()
        declared = type(self).topics
        # Sent all at once, then waited for: one round trip per call rather than one per message.
        futures = [producer.send(m) for m in encoded]
        failures: list[ProduceError] = []
        for message, future in zip(encoded, futures, strict=True):
            if declared[message.topic].delivery != "sync":
                continue
            try:
                producer.wait(future, message.topic)
            except ProduceError as exc:
                failures.append(exc)
        if failures:
            first = failures[0]
            more = "".join(f"; and to {f.topic!r}: {f.cause}" for f in failures[1:])
            raise ProduceError(first.topic, f"{first.cause}{more}", first.kafka_topic) from first
        return futures


def _declared(owner: str, value: object) -> Mapping[str, ResponderTopic]:
    """A responder's topics declaration, checked at class creation: every problem at once."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError([f"{owner}.topics must be a list of topic names or ResponderTopic(...), got {value!r}"])
    if isinstance(value, Mapping):
        value = list(value.values())
    problems: list[str] = []
    found: dict[str, ResponderTopic] = {}
    for item in value:
        spec = ResponderTopic(item) if isinstance(item, str) else item
        if not isinstance(spec, ResponderTopic):
            problems.append(f"{owner}.topics: {item!r} is neither a topic name nor a ResponderTopic(...)")
            continue
        problems.extend(f"{owner}.topics: {p}" for p in spec.problems())
        if spec.name in found:
            problems.append(f"{owner}.topics: topic {spec.name!r} is declared twice")
        found[spec.name] = spec
    if problems:
        raise ConfigError(problems)
    return MappingProxyType(found)


def respond_with(consumer: BaseConsumer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Future[Delivery]]:
    """BaseConsumer.respond_with: the route's responder, sending through the app that routed the consumer."""
    responder = getattr(consumer.topic, "responder", None)
    if responder is None:
        raise KBridgeError(
            f"{type(consumer).__name__}.respond_with(): topic {consumer.topic.name!r} has no responder; "
            "route it with responder=YourResponder"
        )
    result: list[Future[Delivery]] = responder().call(*args, **kwargs)  # the producer of the running perform()
    return result
