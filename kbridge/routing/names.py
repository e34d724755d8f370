"""The one naming rule shared by client ids, group names and topic names (Kafka's legal topic characters)."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def name_problem(kind: str, value: object) -> str | None:
    if not isinstance(value, str) or not NAME_RE.match(value):
        return f"{kind} {value!r} is invalid: use only letters, digits, '.', '_' and '-'"
    if len(value) > 249:
        return f"{kind} {value[:20]!r}... is {len(value)} characters long; Kafka allows at most 249"
    return None
