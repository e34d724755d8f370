"""Backends hand a filtered message (or batch) over to perform(), and return only once that is confirmed.

A backend is a plugin with two halves, both its own:

- the listener's half, built once per process by the runtime: enqueue, housekeeping, close;
- the declaration half, used while the app is declared: which route options it accepts,
  and what it must register in the app's host framework (Celery's task and signals) so
  the other side of its transport can run perform().

kbridge ships `inline` and `celery`. Another backend registers itself with
kbridge.backends.registry.register(), or through the `kbridge.backends` entry point
group, without any change to kbridge's core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..app import KBridge
    from ..params import Params
    from ..routing.route import Route
    from ..runtime import Runtime


class Backend(Protocol):
    """One process's half of a transport, as the listener sees it."""

    def enqueue(self, route: Route, messages: Sequence[Params]) -> None:
        """Hand messages over; raise (EnqueueError, with what was confirmed) if that cannot be confirmed,
        so the listener does not commit them."""

    def housekeeping(self) -> None:
        """Called now and then from the polling thread, off the hot path (e.g. re-queue lost tasks)."""

    def close(self) -> None:
        """Release connections; the process is stopping."""


class BackendPlugin(Protocol):
    name: str
    # True when perform() runs in the listener process itself, so perform()'s own offset
    # marks (automatically_mark_as_consumed=False) can reach the commit.
    performs_in_listener: bool

    def route_problems(self, options: Mapping[str, Any], has_celery: bool) -> list[str]:
        """What is wrong with a route declared on this backend, given its options; every problem, at once."""

    def bind(self, app: KBridge) -> None:
        """Register what the far side of the transport needs, once the app is configured."""

    def build(self, runtime: Runtime) -> Backend:
        """This process's backend instance."""

    def serve_problems(self, runtime: Runtime, routes: Sequence[Route]) -> list[str]:
        """What stops a listener from serving these routes of this backend (a broker the transport needs,
        a store); checked when the listener starts, for the groups it listens to only."""
