"""`make demo`'s program, end to end: it starts its own broker, Redis, listener and worker."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_exits_0_and_its_summary_matches_what_it_produced() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers.demo", "--events", "300"],
        capture_output=True, text=True, timeout=300,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    figures = dict(re.findall(r"^(produced|filtered|performed|duplicates|lost)\s+(\d+)", out, re.M))
    assert figures == {"produced": "300", "filtered": "60", "performed": "240", "duplicates": "0", "lost": "0"}, out
    assert "OK: every event performed, every offset committed" in out
