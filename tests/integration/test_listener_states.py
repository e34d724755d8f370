"""The listener says what it waits for: Kafka down (at start, then again while running), then up.

Each outage may cost at most 5 kbridge log lines at the default level, with no kafka-python
lines or tracebacks, and every message produced around it is performed. The outage lasts
KBRIDGE_TEST_OUTAGE_SECONDS (default 6; set 30 for the full scenario).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from kbridge.testing import processes
from kbridge.testing.kafka import wait_until
from kbridge.testing.services import KAFKA_ENV, RedisService, free_port, tansu

from .conftest import APP, PipelineRun

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(os.environ.get(KAFKA_ENV)), reason="stops the broker; needs the embedded one")]

DOWN = float(os.environ.get("KBRIDGE_TEST_OUTAGE_SECONDS", "6"))
LINE = re.compile(r"^\S+ \S+ [A-Z]+ \[(\S+)\] (.*)$", re.M)


@pytest.fixture
def run(kbridge_redis: RedisService) -> Iterator[PipelineRun]:
    yield PipelineRun(uuid.uuid4().hex[:8], tansu(free_port()), kbridge_redis.url)


def lines(log: str, since: int = 0) -> list[tuple[str, str]]:
    """(logger, message) of every log record after character `since`."""
    return LINE.findall(log[since:])


def test_kafka_down_then_up_costs_a_few_state_lines_and_nothing_else(run: PipelineRun) -> None:
    topic = run.topic("inline")
    listener = processes.listener(APP, run.env, groups=[topic]).start()  # its broker is not there yet
    kafka = run.kafka
    written: list[int] = []
    try:
        listener.wait_for_log("waiting for Kafka", timeout=60)
        time.sleep(max(0.0, DOWN - 1))
        kafka.start()
        run.create(topic, 1)
        wait_until(lambda: f"partitions assigned: {topic}-0" in listener.log(), 60, what="the assignment",
                   alive=[listener])
        written += run.produce(topic, [b'{"n": 1}'] * 10)[0]
        wait_until(lambda: len(run.seen(topic)) == len(written), 60, what="performs", alive=[listener])
        at_start = lines(listener.log())

        mark = len(listener.log())
        kafka.stop()
        down_since = time.monotonic()
        listener.wait_for_log("lost Kafka", timeout=60)
        time.sleep(max(0.0, DOWN - (time.monotonic() - down_since)))
        kafka.start()  # in memory: the topic and the group's offsets are gone, so both start afresh
        run.create(topic, 1)
        wait_until(lambda: f"partitions assigned: {topic}-0" in listener.log()[mark:], 90,
                   what="the assignment after the outage", alive=[listener])
        log = listener.log()
        while_running = lines(log[:log.index("\n", log.index(f"partitions assigned: {topic}-0", mark))], mark)
        # The listener commits offset 10 once Kafka is back (it kept it while Kafka was away); a real broker
        # keeps the topic, this one starts it again at 0, so only offsets from 10 on are new to the group.
        again = run.produce(topic, [b'{"n": 2}'] * 20)[0]
        wait_until(lambda: {(0, o) for o in again if o >= len(written)} <= run.seen(topic).keys(), 60,
                   what="performs after the outage", alive=[listener])
    finally:
        code = listener.stop()
        kafka.stop()
    log = listener.log()
    print(f"\n[kafka-down-{DOWN:.0f}s] lines at start, then when lost while running:\n"
          + "\n".join(f"  {logger}: {message}" for logger, message in at_start + [("--", "--")] + while_running))
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log
    assert not [ln for ln in lines(log) if ln[0].startswith("kafka")], log
    state = [m for lg, m in at_start if lg != "kbridge.events"]  # started/enqueued lines are activity, not state
    assert len(state) <= 5, state
    assert any("waiting for Kafka" in m for m in state) and any("connected to Kafka" in m for m in state), state
    assert any("waiting for partition assignment" in m for m in state), state
    outage = [m for lg, m in while_running if lg != "kbridge.events"]  # from the stop to the assignment after it
    assert len(outage) <= 5, outage
    assert any("lost Kafka" in m for m in outage) and any("reaches Kafka again" in m for m in outage), outage


def test_topics_create_without_a_broker_is_one_line_and_exit_1() -> None:
    env = processes.child_env({"PIPELINE_KAFKA": f"127.0.0.1:{free_port()}"})
    done = subprocess.run([sys.executable, "-m", "kbridge", "topics", "create", "--app", APP], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: cannot reach Kafka at '127.0.0.1:"), done.stderr
    assert "kbridge dev" in done.stderr
