"""Runs perform() in the listener process: no broker, for tests and light topics.

Retries sleep on the polling thread. When Kafka does not take a dead letter, the
hand-over fails, so the listener holds the partition and hands the same messages over
again later; this backend remembers that their perform() already gave up, and then
only retries the dead letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kafka import TopicPartition

from ..errors import EnqueueError, KBridgeError
from ..params import Params, ParamsBatch
from ..perform import DeadLetterPending, Job, PerformRunner, Retry
from ..routing.route import Route

if TYPE_CHECKING:
    from ..app import KBridge
    from ..runtime import Runtime


log = logging.getLogger("kbridge.listener")


class DeadLetterNotTaken(KBridgeError):
    def __init__(self, pending: DeadLetterPending) -> None:
        super().__init__(f"{type(pending.cause).__name__}: {pending.cause}")
        self.pending = pending


class InlineScheduler:
    def perform_again(self, job: Job, retry: Retry) -> None:
        time.sleep(retry.countdown)

    def dead_letter_again(self, job: Job, pending: DeadLetterPending) -> None:
        raise DeadLetterNotTaken(pending)


class InlineBackend:
    def __init__(self, runner: PerformRunner) -> None:
        self.runner = runner
        self.scheduler = InlineScheduler()
        # (route id, topic, partition, first offset) -> the unit's offsets and its pending dead letter. The
        # route is part of the key: groups routing the same topic share this backend, never their outcomes.
        self._pending: dict[tuple[str, str, int, int], tuple[list[int], DeadLetterPending]] = {}

    def enqueue(self, route: Route, messages: Sequence[Params]) -> None:
        """One run per message (or per batch of at most max_batch_size); a run that could not even be
        dead-lettered stops here."""
        done = 0
        for unit in route.units(messages):
            try:
                self._run(Job(route, ParamsBatch(unit)))
            except Exception as exc:
                raise EnqueueError(
                    f"{route.shadow} offset {unit[0].offset} failed and could not be dead-lettered: "
                    f"{type(exc).__name__}: {exc}",
                    confirmed=done,
                ) from exc
            done += len(unit)

    def _run(self, job: Job) -> None:
        first = job.batch[0]
        key = (job.route.route_id, first.topic, first.partition, first.offset)
        offsets = [p.offset for p in job.batch]
        remembered = self._pending.pop(key, None)
        try:
            if remembered is not None and remembered[0] == offsets:
                pending = remembered[1]
                self.runner.resume_dead_letter(job, pending.failure, pending.attempts, pending.sent,
                                               pending.tries + 1, self.scheduler)
            else:
                self.runner.run(job, self.scheduler)
        except DeadLetterNotTaken as exc:
            self._pending[key] = (offsets, exc.pending)
            raise

    def tick(self, route: Route, tp: TopicPartition) -> None:
        """tick_interval: consumer.tick() here, through the runner's stages (after_failure, time limit, events)."""
        error = self.runner.tick(Job(route, ParamsBatch([]), tick=tp))
        if error is not None:
            log.warning("tick() of %s %s-%d failed: %s: %s", route.shadow, tp.topic, tp.partition,
                        type(error).__name__, error)

    def housekeeping(self) -> None:
        return None

    def close(self) -> None:
        return None


class InlinePlugin:
    name = "inline"
    performs_in_listener = True

    def route_problems(self, options: Mapping[str, Any], has_celery: bool) -> list[str]:
        return []

    def bind(self, app: KBridge) -> None:
        return None  # nothing runs anywhere else

    def serve_problems(self, runtime: Runtime, routes: Sequence[Route]) -> list[str]:
        return []

    def build(self, runtime: Runtime) -> InlineBackend:
        # The listener's thread runs perform(); nothing else would enforce the topic's timeout.
        return InlineBackend(runtime.runner(enforce_timeout=True))


PLUGIN = InlinePlugin()
