"""The listener process's garbage collector settings, applied once when `kbridge listen` (or a swarm node) starts.

A poll batch keeps a few containers per message alive at once (the messages, their task
arguments and ledger entries) until the batch is handed over, so CPython's default
young-generation threshold (700) runs collections many times per batch, and the survivors
they promote later cost full collections that walk every object of the process: Celery,
kombu and kafka-python included. Those objects are freed by reference counting, never by
the collector; the collector only looks at them. Measured in `python -m bench --only enqueue`,
that looking took about a quarter of the listener's time.

Only a listener that owns its process tunes the collector (it runs on the main thread); one
embedded in another program leaves that program's collector as it is.

So: objects alive at start (the app and every library) are frozen out of collections, and
the young generation is collected once per YOUNG_THRESHOLD net new containers rather than per
700. Cyclic garbage is rare on this path, but a perform() run inline, or a failure's
traceback, can make some and hold a large payload in it: housekeeping collects the young
generations every few seconds too (a few milliseconds at most), so nothing waits long.
"""

from __future__ import annotations

import gc
import threading

YOUNG_THRESHOLD = 50_000

_lock = threading.Lock()
_tuned = False


def tune_collector() -> None:
    """Idempotent; never lowers a threshold the program has raised itself."""
    global _tuned
    with _lock:
        if _tuned:
            return
        _tuned = True
        gc.freeze()
        young, middle, old = gc.get_threshold()
        if young:  # 0: the program turned automatic collection off; leave it so
            gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)


def collect_young() -> None:
    """Collect the young and middle generations, which the raised threshold would otherwise leave for longer;
    nothing when the collector was not tuned."""
    if _tuned:
        gc.collect(1)
