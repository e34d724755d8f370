"""Database connection hygiene around every perform(), in the celery worker and inline in the listener.

Django closes stale connections at the start and end of each request (the
request_started / request_finished signals). Workers and listeners are long-lived
processes that never see a request, so without this a connection past CONN_MAX_AGE,
or one broken by a database restart or failover, would be reused by every later
perform() and each of them would fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import close_old_connections

from kbridge.consumer import BaseConsumer


@contextmanager
def close_old_connections_hook(consumer: BaseConsumer) -> Iterator[None]:
    """A kbridge perform hook: close_old_connections() before perform(), and after it even when it failed."""
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()
