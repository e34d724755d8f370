"""Shared fixtures: one broker and one Redis per session (kbridge.testing.pytest_plugin)."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Every fault scenario's produced / performed / duplicated / lost / dead-lettered, in one place."""
    from tests.integration.conftest import SCENARIO_LINES

    if SCENARIO_LINES:
        terminalreporter.section("scenario counts")
        for line in SCENARIO_LINES:
            terminalreporter.write_line(line.strip())
