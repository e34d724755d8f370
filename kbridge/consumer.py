"""BaseConsumer, the unit users write: filters run in the listener, perform runs in the worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from kafka import TopicPartition

from . import callbacks
from .errors import KBridgeError
from .params import Params, ParamsBatch

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .producer import Delivery
    from .routing.route import Route

_FILTER_MARK = "__kbridge_before_enqueue__"

F = TypeVar("F", bound=Callable[..., Any])

# Where mark_as_consumed() reports a mark: set by whoever runs perform() on the listener's thread
# (the processor, the test client) around a run of a topic with automatically_mark_as_consumed=False.
_mark_sink: ContextVar[Callable[[Params], None] | None] = ContextVar("kbridge_mark_sink", default=None)


@contextmanager
def collecting_marks(sink: Callable[[Params], None]) -> Iterator[None]:
    """Route mark_as_consumed() calls made inside this block to sink (one call per mark)."""
    token = _mark_sink.set(sink)
    try:
        yield
    finally:
        _mark_sink.reset(token)


def before_enqueue(fn: F) -> F:
    """Mark a consumer method as a filter. A falsy result means "do not enqueue, but count as handled"."""
    setattr(fn, _FILTER_MARK, True)
    return fn


class BaseConsumer:
    """Subclass it, implement perform(), and route a topic to it.

    A consumer instance lives for one run: one message (or one batch) in the
    listener for the filters, and again in the worker for perform().
    """

    _filters: ClassVar[tuple[str, ...]] = ()
    _callbacks: ClassVar[dict[str, tuple[str, ...]]] = {}  # kind -> method names; see kbridge.callbacks

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if getattr(value, _FILTER_MARK, False) and name not in names:
                    names.append(name)
        cls._filters = tuple(names)
        cls._callbacks = callbacks.collect(cls)

    def __init__(self, topic: Route, params_batch: ParamsBatch, partition: TopicPartition | None = None) -> None:
        self.topic = topic
        self.params_batch = params_batch
        self.marked: list[Params] = []  # what this run passed to mark_as_consumed(), in call order
        self._partition = partition  # a tick()'s partition; its params_batch is empty

    @property
    def partition(self) -> TopicPartition:
        """The Kafka topic and partition of this run: tick()'s, or that of the first message."""
        if self._partition is not None:
            return self._partition
        first = self.params_batch[0]
        return TopicPartition(first.topic, first.partition)

    def tick(self) -> None:
        """With tick_interval=SECONDS: called for each assigned partition (self.partition) that got no message
        for that long; in the worker with the celery backend, in the listener inline. self.params_batch is empty."""

    @property
    def params(self) -> Params:
        if self.topic.batch_consuming and len(self.params_batch) != 1:
            raise KBridgeError(
                f"{type(self).__name__}.params is not available on batch-consuming topic "
                f"{self.topic.name!r}; iterate self.params_batch instead"
            )
        return self.params_batch[0]

    def run_filters(self) -> bool:
        """True when every before_enqueue filter passes; stops at the first falsy one."""
        return all(getattr(self, name)() for name in self._filters)

    def mark_as_consumed(self, params: Params) -> None:
        """Karafka's manual offset management: commit params.offset + 1 for params' partition.

        Only on a topic routed with automatically_mark_as_consumed=False (inline backend),
        where nothing else moves the committed offset. Kafka keeps one offset per partition,
        so marking a message counts every earlier message of its partition as consumed too,
        marked or not. A mark below an earlier one changes nothing. On other topics this is
        a no-op: every handled message is committed anyway.
        """
        if not any(p.offset == params.offset and p.partition == params.partition and p.topic == params.topic
                   for p in self.params_batch):
            raise KBridgeError(
                f"{type(self).__name__}.mark_as_consumed({params!r}): only a message of this run's "
                f"params_batch can be marked ({self.params_batch!r})"
            )
        self.marked.append(params)
        sink = _mark_sink.get()
        if sink is not None and not self.topic.automatically_mark_as_consumed:
            sink(params)

    def respond_with(self, *args: Any, **kwargs: Any) -> list[Future[Delivery]]:
        """Call the route's responder (topic option responder=...) with these arguments.

        Its respond() buffers, the usage is validated, and only then is anything sent
        (kbridge.responder). Raises ResponderError or ProduceError, so perform() fails and retries.
        """
        from .responder import respond_with

        return respond_with(self, args, kwargs)

    def perform(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement perform()")

    def after_failure(self, exc: BaseException) -> None:
        """Called on any failure of perform(), before the retry policy takes over."""
