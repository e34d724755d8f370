"""Where the worker pool finds its services, read once from the environment.

The KBRIDGE_DEMO_* variables come first so `python -m workers.demo` can point its
subprocesses at its embedded services even in a shell that has WORKERS_* set for
a real deployment.
"""

from __future__ import annotations

import os


def _env(*names: str, default: str) -> str:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return default


BROKER_URL = _env("KBRIDGE_DEMO_REDIS", "WORKERS_BROKER_URL", default="redis://127.0.0.1:6379/0")
KAFKA_BOOTSTRAP = _env("KBRIDGE_DEMO_KAFKA", "WORKERS_KAFKA_BOOTSTRAP", default="127.0.0.1:9092")
# Progress is kept in Redis; it is the broker's Redis unless the broker is something else.
STORE_URL = _env(
    "KBRIDGE_DEMO_REDIS", "WORKERS_STORE_URL",
    default=BROKER_URL if BROKER_URL.startswith(("redis://", "rediss://")) else "redis://127.0.0.1:6379/0",
)
