"""The ordering option's validation, apart from the gate so that declaring routes imports neither Celery nor redis."""

from __future__ import annotations

from typing import Any

MODES = ("partition", "key")


def ordering_problems(where: str, opts: dict[str, Any], backend: object) -> list[str]:
    mode = opts["ordering"]
    if mode is None:
        return []
    if mode not in MODES:
        return [f"{where}: ordering must be 'partition', 'key' or None, got {mode!r}"]
    problems = []
    if backend != "celery":
        problems.append(f"{where}: ordering={mode!r} is for backend='celery'; backend {backend!r} already runs "
                        "each partition in offset order on the listener's thread, so drop ordering")
    if mode == "key" and opts["batch_consuming"] is True:
        problems.append(f"{where}: ordering='key' runs one message per task; a batch mixes keys. Use "
                        "ordering='partition' with batch_consuming=True, or drop batch_consuming")
    return problems
