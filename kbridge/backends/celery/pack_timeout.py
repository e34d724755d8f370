"""The topic's timeout for each message of a pack, from one watchdog thread per process.

Celery's own limits cover a whole task, so inside a pack the timeout is enforced here, the
same way kbridge.deadline does for the inline backend (PerformTimeout raised inside the
running thread), but without starting a timer thread per message: that cost more than
a trivial perform() itself.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from ...deadline import _raise_in
from ...errors import PerformTimeout
from ...perform import Job, Stage


class Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []  # (when, token)
        self._armed: dict[int, int] = {}  # token -> thread id, while armed and not fired
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def limit(self, seconds: float, what: str) -> Iterator[None]:
        token = self._arm(seconds)
        try:
            yield
        except PerformTimeout:
            raise PerformTimeout(f"{what} ran past its timeout of {seconds:g}s") from None
        finally:
            fired = self._disarm(token)
            if fired:
                _raise_in(threading.get_ident(), None)  # drop the exception if it was not delivered yet
        if fired:
            raise PerformTimeout(f"{what} ran past its timeout of {seconds:g}s")

    def _arm(self, seconds: float) -> int:
        with self._cond:
            if self._thread is None or self._pid != os.getpid():  # a forked pool child starts its own
                self._pid = os.getpid()
                self._heap, self._armed, self._fired = [], {}, set()
                self._thread = threading.Thread(target=self._run, name="kbridge-pack-timeout", daemon=True)
                self._thread.start()
            token = next(self._tokens)
            self._armed[token] = threading.get_ident()
            heapq.heappush(self._heap, (time.monotonic() + seconds, token))
            if self._heap[0][1] == token:
                self._cond.notify()
            return token

    def _disarm(self, token: int) -> bool:
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._cond.wait()
                    continue
                when, token = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                thread_id = self._armed.pop(token)
                self._fired.add(token)
                _raise_in(thread_id, PerformTimeout)


WATCHDOG = Watchdog()


class PackTimeLimitStage(Stage):
    def around(self, job: Job) -> AbstractContextManager[object]:
        return WATCHDOG.limit(job.route.timeout, f"{job.route.consumer.__name__}.perform on {job.route.shadow}")
