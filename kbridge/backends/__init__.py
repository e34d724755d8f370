"""Backends hand a filtered message (or batch) over to perform(), and return only once that is confirmed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..params import Params
from ..routing.topic import Topic


class Backend(Protocol):
    def enqueue(self, route: Topic, messages: Sequence[Params]) -> None:
        """Hand messages over; raise if that cannot be confirmed, so the listener does not commit them."""
