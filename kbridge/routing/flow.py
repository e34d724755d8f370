"""Validation of the flow-control topic options (expire_after, delay_by, throttle, tick_interval) and of the
dead-letter circuit breaker's (dead_letter_max_ratio, dead_letter_min_messages, dead_letter_cooldown).

The steps that act on them live in kbridge.listener.steps (expire, delay, throttle, breaker, tick).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def flow_problems(where: str, opts: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in ("expire_after", "delay_by", "tick_interval"):
        if opts[key] is not None and not _seconds(opts[key]):
            problems.append(f"{where}: {key} must be a number of seconds > 0 or None (off), got {opts[key]!r}")
    throttle = opts["throttle"]
    if throttle is not None:
        ok = isinstance(throttle, (tuple, list)) and len(throttle) == 2
        limit, seconds = throttle if ok else (None, None)
        if not (ok and isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 and _seconds(seconds)):
            problems.append(f"{where}: throttle must be (LIMIT, SECONDS): at most LIMIT messages (an integer > 0) "
                            f"of a partition handed over per SECONDS (> 0), e.g. throttle=(50, 1.0); got {throttle!r}")
    expire, delay = opts["expire_after"], opts["delay_by"]
    if _seconds(expire) and _seconds(delay) and delay >= expire:
        problems.append(f"{where}: delay_by={delay!r} is not below expire_after={expire!r}; expire_after is judged "
                        "when a message is fetched, so a message could never be both waited for and fresh. "
                        "Lower delay_by or raise expire_after")
    return problems


def breaker_problems(where: str, opts: Mapping[str, Any]) -> list[str]:
    problems = []
    ratio = opts["dead_letter_max_ratio"]
    if ratio is not None and not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio < 1):
        problems.append(f"{where}: dead_letter_max_ratio must be a fraction between 0 and 1 (e.g. 0.5), "
                        f"or None to turn the dead-letter breaker off; got {ratio!r}")
    least = opts["dead_letter_min_messages"]
    if not (isinstance(least, int) and not isinstance(least, bool) and least > 0):
        problems.append(f"{where}: dead_letter_min_messages must be an integer > 0, got {least!r}")
    if not _seconds(opts["dead_letter_cooldown"]):
        problems.append(f"{where}: dead_letter_cooldown must be a number of seconds > 0, "
                        f"got {opts['dead_letter_cooldown']!r}")
    return problems


def flow_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The validated options as Route fields."""
    throttle = opts["throttle"]
    return {
        "expire_after": _float_or_none(opts["expire_after"]),
        "delay_by": _float_or_none(opts["delay_by"]),
        "throttle": None if throttle is None else (int(throttle[0]), float(throttle[1])),
        "tick_interval": _float_or_none(opts["tick_interval"]),
        "dead_letter_max_ratio": _float_or_none(opts["dead_letter_max_ratio"]),
        "dead_letter_min_messages": opts["dead_letter_min_messages"],
        "dead_letter_cooldown": float(opts["dead_letter_cooldown"]),
    }


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
