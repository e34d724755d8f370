"""One row per benchmark, printed as a table and saved as JSON.

A target applies either to the ratio (kbridge vs. its same-run baseline) or to the
value itself (memory in MB, latency in ms), as the benchmark says.
"""

from __future__ import annotations

import json
import operator
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

OPS = {">=": operator.ge, "<=": operator.le}


@dataclass
class Target:
    op: Literal[">=", "<="]
    threshold: float
    on: Literal["ratio", "value"] = "ratio"

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        subject = ratio if self.on == "ratio" else value
        return None if subject is None else bool(OPS[self.op](subject, self.threshold))

    def __str__(self) -> str:
        return f"{'ratio' if self.on == 'ratio' else 'value'} {self.op} {self.threshold:g}"


@dataclass
class Result:
    name: str
    unit: str
    value: float | None = None
    baseline: float | None = None
    baseline_name: str = ""
    target: Target | None = None
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    error: str | None = None
    seconds: float = 0.0

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.error is not None:
            return False
        return None if self.target is None else self.target.met(self.value, self.ratio)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = str(self.target) if self.target else None
        data["ratio"] = self.ratio
        data["met"] = self.met
        return data


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def table(results: Sequence[Result]) -> str:
    headers = ["benchmark", "value", "baseline", "ratio", "target", "met?"]
    rows = []
    for r in results:
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        if r.error is not None:
            rows.append([r.name, "ERROR", "-", "-", str(r.target or "-"), met])
            continue
        rows.append([
            r.name,
            f"{_num(r.value)} {r.unit}",
            f"{_num(r.baseline)} ({r.baseline_name})" if r.baseline is not None else "-",
            f"{r.ratio:.3f}" if r.ratio is not None else "-",
            str(r.target or "-"),
            met,
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*headers), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in rows]
    for r in results:
        if r.error is not None:
            out.append(f"\n{r.name} failed: {r.error}")
        elif r.note:
            out.append(f"\n{r.name}: {r.note}")
    return "\n".join(out)


def write_json(path: Path, results: Sequence[Result], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        **meta,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": [r.to_json() for r in results],
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
