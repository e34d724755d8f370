"""The wrapper every perform() runs in, on both backends (SidekiqGlass's role).

It guarantees the reentrancy hook: after_failure(exc) sees every failure, then the
error goes on unchanged so the backend's retry policy decides what happens next.
"""

from __future__ import annotations

import logging

from .consumer import BaseConsumer

log = logging.getLogger("kbridge.glass")


def run(consumer: BaseConsumer) -> None:
    try:
        consumer.perform()
    except BaseException as exc:
        try:
            consumer.after_failure(exc)
        except Exception:
            log.exception("%s.after_failure raised while handling %r", type(consumer).__name__, exc)
        raise
