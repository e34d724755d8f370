"""Every error kbridge raises on purpose derives from KBridgeError, so callers can tell ours from library noise."""

from __future__ import annotations

from collections.abc import Iterable


class KBridgeError(Exception):
    """Base class of kbridge's own errors."""


class ConfigError(KBridgeError):
    """Invalid settings or routes. Carries every problem found, so one run shows them all."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"kbridge configuration has {len(self.problems)} problem(s):\n{lines}")


class UnknownRouteError(KBridgeError):
    """A task named a route that this process's routing does not have; it must never run."""


class EnqueueError(KBridgeError):
    """The backend could not confirm that every message was handed over.

    confirmed counts the leading messages that were, so the listener neither
    re-enqueues them nor commits past the first one that was not.
    """

    def __init__(self, message: str, confirmed: int = 0) -> None:
        super().__init__(message)
        self.confirmed = confirmed


class DeserializationError(KBridgeError):
    """A payload the topic's deserializer cannot read. Retrying cannot help, so it is dead-lettered at once."""


class PayloadValidationError(DeserializationError):
    """The payload was read but is not a valid instance of the route's payload_model.

    errors holds (field path, message) pairs, e.g. ("items.0.price", "Input should be greater than 0").
    """

    def __init__(self, message: str, errors: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.errors = errors


class PerformTimeout(KBridgeError):
    """perform() ran past its topic's timeout on the inline backend."""

    def __init__(self, message: str = "perform() ran past its topic's timeout") -> None:
        super().__init__(message)


class WireError(KBridgeError):
    """Task data that is not what a kbridge listener writes: it cannot be trusted, so it never runs."""
