"""Gives the C heap's free memory back to the OS between bursts.

A poll batch is held at once as fetched record batches, decoded records, task
messages and one Redis command, and most of those are larger than pymalloc's 512-byte
objects, so they come from glibc's heap. Once freed, glibc keeps those pages: after a
long stream the listener's RSS stays near its peak although it holds nothing. Trimming
on the listener's housekeeping (every few seconds, a few milliseconds) returns them.
Where there is no glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_trim: Callable[[int], int] | None | bool = False  # False: not looked up yet; None: not available


def release_free_memory() -> None:
    global _trim
    if _trim is False:
        try:
            _trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _trim = None
    if callable(_trim):
        _trim(0)
