"""`kbridge install` in an empty directory, then its printed next steps, run as printed: events go from
Kafka to the scaffolded consumer's perform() in a real celery worker, and heartbeats are filtered out.

The only things the test supplies are the service addresses, through the variables the printed
`export` line names, and a topic name of its own (so an external Kafka can be reused).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from kbridge.testing.kafka import committed_offsets, wait_until
from kbridge.testing.processes import Process
from kbridge.testing.services import KafkaService, RedisService

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent  # the venv's bin: kbridge, celery and python as a user's shell finds them
PERFORMED = re.compile(r"performed (\S+)-(\d+)@(\d+): (\{.*\})")
SENT = re.compile(r"^sent (\{.*\}) to (\S+)-(\d+)@(\d+)$", re.M)


def own_db(url: str, db: int = 11) -> str:
    """The session Redis, but a database of its own, so only this test's worker reads the default queue."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def test_install_then_the_printed_next_steps_perform_events_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kbridge_kafka: KafkaService, kbridge_redis: RedisService
) -> None:
    assert (BIN / "kbridge").exists() and (BIN / "celery").exists(), f"run the tests from the venv ({BIN})"
    monkeypatch.chdir(tmp_path)  # every step runs from the project directory, as the output says
    topic = f"install-{uuid.uuid4().hex[:8]}"
    broker = own_db(kbridge_redis.url)
    redis.Redis.from_url(broker).flushdb()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KBRIDGE_APP")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"

    done = subprocess.run(["kbridge", "install", "--topic", topic], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [shlex.split(line) for line in re.findall(r"^ +\$ (.+)$", done.stdout, re.M)]
    assert [s[0] for s in steps] == ["kbridge", "export", "kbridge", "celery", "kbridge", "python"], done.stdout
    assert steps[0] == ["kbridge", "dev"]  # this session's services stand in for it (see test_first_hour.py)
    export, create, worker_argv, listen_argv, produce_argv = steps[1:]

    # The export line names the variables the scaffold reads; point them at this session's services.
    exported = dict(a.split("=", 1) for a in export[1:])
    addresses = {"KAFKA_BOOTSTRAP_SERVERS": kbridge_kafka.bootstrap, "CELERY_BROKER_URL": broker}
    assert exported.keys() == addresses.keys()
    env.update(addresses)

    created = subprocess.run(create, env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    assert re.search(rf"^ {re.escape(topic)}\s+created, 3 partition\(s\)$", created.stdout, re.M), created.stdout
    assert re.search(rf"^ {re.escape(topic)}\.dlq\s+created, 3 partition\(s\)$", created.stdout, re.M)

    worker = Process("install-worker", worker_argv, env).start()
    listener = Process("install-listener", listen_argv, env).start()
    try:
        worker.wait_for_log("ready.", timeout=90)
        produced = subprocess.run(produce_argv, env=env, capture_output=True, text=True, timeout=120)
        assert produced.returncode == 0, produced.stdout + produced.stderr
        sent = {(int(p), int(o)): json.loads(event) for event, t, p, o in SENT.findall(produced.stdout) if t == topic}
        assert len(sent) == 10, produced.stdout
        business = {at: e for at, e in sent.items() if e["type"] != "heartbeat"}
        assert len(business) == 8  # every 5th event is a heartbeat, for the filter

        def performed() -> dict[tuple[int, int], dict[str, object]]:
            return {(int(p), int(o)): ast.literal_eval(payload)
                    for t, p, o, payload in PERFORMED.findall(worker.log()) if t == topic}

        wait_until(lambda: business.keys() <= performed().keys(), 180, what="every signup performed",
                   alive=(worker, listener))
        ends: dict[int, int] = {}
        for p, o in sent:
            ends[p] = max(ends.get(p, 0), o + 1)
        group_id = f"kafka_app_{topic}"
        wait_until(
            lambda: {tp.partition: o for tp, o in committed_offsets(kbridge_kafka.bootstrap, group_id).items()
                     if tp.topic == topic} == ends,
            60, what=f"committed offsets {ends}", alive=(listener,),
        )
        # Everything is committed, so every message was enqueued or filtered; an enqueued heartbeat would show.
        wait_until(lambda: redis.Redis.from_url(broker).llen("celery") == 0, 30, what="the queue drained")
        assert performed() == business, worker.log()[-3000:]

        listener.signal(signal.SIGTERM)
        assert listener.wait(60) == 0, listener.log()[-3000:]
    finally:
        listener.stop()
        worker.stop()
