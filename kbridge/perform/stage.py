"""The interface every perform stage implements: named hooks, each optional.

- before(job): may settle the job without perform(): a duplicate, or a task that must wait for its
  predecessor. The first stage that returns an outcome wins; no other hook of that attempt runs.
- around(job): a context manager entered around perform(), outermost stage first;
  instrumentation, framework context, after_failure and the time limit are such wrappers.
- on_failure(job, error): after a failed attempt, the first stage that returns an
  outcome decides (the retry policy, then the dead-letter step).
- after(job, outcome): once the job has an outcome, for bookkeeping.

A stage that needs none of them is not a stage.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from .job import Job, Outcome


class Stage:
    def before(self, job: Job) -> Outcome | None:
        return None

    def around(self, job: Job) -> AbstractContextManager[object] | None:
        return None

    def on_failure(self, job: Job, error: BaseException) -> Outcome | None:
        return None

    def after(self, job: Job, outcome: Outcome) -> None:
        return None
