"""The perform runner: one attempt through the ordered stages, and the loop over attempts.

The Celery task, the inline backend and TestClient all run jobs here. They differ only
in their Scheduler, which says how the next attempt waits: a Celery retry with a
countdown, a sleep on the listener's thread, or nothing at all in a unit test.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Protocol

from ..dlq import Failure
from .dead_letter import DeadLetterStage
from .job import DeadLetterPending, Job, Outcome, Performed, Retry
from .stage import Stage


class Scheduler(Protocol):
    def perform_again(self, job: Job, retry: Retry) -> None:
        """Return once the next attempt may run here, or raise to hand it elsewhere (a Celery retry)."""

    def dead_letter_again(self, job: Job, pending: DeadLetterPending) -> None:
        """Kafka did not take a dead letter: return to try again here at once, or raise to hand it elsewhere."""


class PerformRunner:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        self._dead_letter = next((s for s in self.stages if isinstance(s, DeadLetterStage)), None)

    def attempt(self, job: Job) -> Outcome:
        """One perform() inside every stage's around(), outermost first; on failure, the first deciding stage."""
        job.consumer = job.route.consumer(job.route, job.batch)
        try:
            with self._around(job):
                job.consumer.perform()
        except Exception as exc:
            for stage in self.stages:
                outcome = stage.on_failure(job, exc)
                if outcome is not None:
                    return outcome
            raise
        return Performed(job.attempt)

    def tick(self, job: Job) -> Exception | None:
        """One tick() inside every stage's around() (after_failure, time limit, instrumentation), or what it raised.

        A tick has no message to retry or dead-letter: the next one comes tick_interval later.
        """
        assert job.tick is not None
        job.consumer = job.route.consumer(job.route, job.batch, job.tick)
        try:
            with self._around(job):
                job.consumer.tick()
        except Exception as exc:
            return exc
        return None

    @contextmanager
    def _around(self, job: Job) -> Iterator[None]:
        """Every stage's around(), outermost first."""
        with ExitStack() as stack:
            for stage in self.stages:
                wrapper = stage.around(job)
                if wrapper is not None:
                    stack.enter_context(wrapper)
            yield

    def run(self, job: Job, scheduler: Scheduler) -> Outcome:
        """Attempts until perform() succeeds or its messages are dead-lettered."""
        while True:
            outcome = self.attempt(job)
            if isinstance(outcome, Retry):
                scheduler.perform_again(job, outcome)
                job = job.next_attempt()
                continue
            return self._settle(job, outcome, scheduler)

    def resume_dead_letter(self, job: Job, failure: Failure, attempts: int, sent: int, tries: int,
                           scheduler: Scheduler) -> Outcome:
        """Only the dead-letter step of a job whose perform() already gave up."""
        return self._settle(job, self._dead_letter_stage().send(job, failure, attempts, sent, tries), scheduler)

    def _settle(self, job: Job, outcome: Outcome, scheduler: Scheduler) -> Outcome:
        while isinstance(outcome, DeadLetterPending):
            scheduler.dead_letter_again(job, outcome)
            outcome = self._dead_letter_stage().send(job, outcome.failure, outcome.attempts, outcome.sent,
                                                     outcome.tries + 1)
        for stage in self.stages:
            stage.after(job, outcome)
        return outcome

    def _dead_letter_stage(self) -> DeadLetterStage:
        if self._dead_letter is None:
            raise LookupError("this runner has no dead-letter stage")
        return self._dead_letter
