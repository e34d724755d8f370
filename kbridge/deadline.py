"""A deadline for code running on the current thread (the inline backend's timeout).

There is no safe way to kill a thread, so when the deadline passes a PerformTimeout
is raised *inside* the running thread (PyThreadState_SetAsyncExc). That stops
Python code at its next bytecode. A call blocked in C (a socket read, time.sleep)
is interrupted only when it returns; use the celery backend, whose hard time limit
kills the process, when that matters.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import PerformTimeout


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    target = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                _raise_in(target, PerformTimeout)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except PerformTimeout:
        raise PerformTimeout(f"{what} ran past its timeout of {seconds:g}s") from None
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
        if state["fired"]:
            _raise_in(target, None)  # drop the exception if it was not delivered yet
    if state["fired"]:
        raise PerformTimeout(f"{what} ran past its timeout of {seconds:g}s")
