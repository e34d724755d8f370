"""BaseConsumer, the unit users write: filters run in the listener, perform runs in the worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .errors import KBridgeError
from .params import Params, ParamsBatch

if TYPE_CHECKING:
    from .routing.topic import Topic

_FILTER_MARK = "__kbridge_before_enqueue__"

F = TypeVar("F", bound=Callable[..., Any])


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if getattr(value, _FILTER_MARK, False) and name not in names:
                    names.append(name)
        cls._filters = tuple(names)

    def __init__(self, topic: Topic, params_batch: ParamsBatch) -> None:
        self.topic = topic
        self.params_batch = params_batch

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

    def perform(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement perform()")

    def after_failure(self, exc: BaseException) -> None:
        """Called on any failure of perform(), before the retry policy takes over."""
