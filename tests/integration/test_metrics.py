"""Metrics, health checks and `kbridge lag` over HTTP and the CLI, against the real broker, Redis and celery worker.

One run of tests/apps/metrics_app.py: a topic with a filter (and one poison payload the
filter cannot parse), and a topic whose perform() always fails (max_retries=2). The
listener's and the prefork worker's /metrics must show exactly what happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kbridge.testing import processes
from kbridge.testing.kafka import committed_offsets, create_topics, end_offsets, produce, wait_until
from kbridge.testing.services import KafkaService, RedisService, free_port

pytestmark = pytest.mark.integration

APP = "tests.apps.metrics_app:app"
CELERY_APP = "tests.apps.metrics_app:celery_app"
COUNTERS = ("fetched", "filtered", "enqueued", "performed", "failed", "retried", "dead_lettered")


@dataclass
class MetricsRun:
    run: str
    kafka: KafkaService
    redis_url: str
    worker_port: int
    listener_port: int
    health_port: int

    @property
    def env(self) -> dict[str, str]:
        return {"METRICS_RUN": self.run, "METRICS_KAFKA": self.kafka.bootstrap, "METRICS_REDIS": self.redis_url,
                "METRICS_WORKER_PORT": str(self.worker_port)}

    def topic(self, suffix: str) -> str:
        return f"{self.run}.{suffix}"

    def group_id(self, topic: str) -> str:
        return f"metrics-{self.run}_{topic}"

    def kbridge(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "kbridge", *args, "--app", APP], env=processes.child_env(self.env),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def metrics_run(kbridge_kafka: KafkaService, kbridge_redis: RedisService) -> MetricsRun:
    return MetricsRun(uuid.uuid4().hex[:8], kbridge_kafka, kbridge_redis.url, free_port(), free_port(), free_port())


@pytest.fixture(scope="module")
def worker(metrics_run: MetricsRun) -> Iterator[processes.Process]:
    """A plain `celery -A ... worker -P prefork -c 2`: metrics come from the metrics_port setting alone."""
    proc = processes.celery_worker(CELERY_APP, metrics_run.env, [f"kbridge-metrics-{metrics_run.run}"]).start()
    try:
        proc.wait_for_log("ready.", timeout=90)
        yield proc
    finally:
        proc.stop()


def http(port: int, path: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = http(port, "/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def counts(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], group_id: str, topic: str) -> dict[str, int]:
    labels = frozenset({"group_id": group_id, "topic": topic}.items())
    return {name: int(samples.get((f"kbridge_{name}_total", labels), 0)) for name in COUNTERS}


def lag_rows(output: str) -> list[dict[str, Any]]:
    """The rows of `kbridge lag`'s table: group_id topic partition committed end lag."""
    rows = []
    for line in output.splitlines():
        cells = line.split()
        if len(cells) == 6 and cells[2].isdigit():
            rows.append(dict(zip(("group_id", "topic", "partition", "committed", "end", "lag"), cells, strict=True)))
    return rows


@pytest.mark.timeout(600)
def test_metrics_health_and_lag_after_a_run(metrics_run: MetricsRun, worker: processes.Process) -> None:
    run = metrics_run
    events, failing = run.topic("events"), run.topic("failing")
    create_topics(run.kafka.bootstrap, [events], 3)
    create_topics(run.kafka.bootstrap, [failing, f"{events}.dlq", f"{failing}.dlq"], 1)
    listener = processes.Process("listener", [
        sys.executable, "-m", "kbridge", "listen", "--app", APP,
        "--metrics-port", str(run.listener_port), "--health-port", str(run.health_port),
    ], processes.child_env(run.env)).start()
    try:
        # -- readiness: 503 until both groups have their partitions, then 200; liveness 200 throughout
        statuses: list[int | None] = []
        wait_until(lambda: statuses.append(http(run.health_port, "/ready")[0]) or statuses[-1] == 200, 90,
                   interval=0.2, what="/ready to answer 200", alive=[listener])
        ready = json.loads(http(run.health_port, "/ready")[1])
        live_status, live = http(run.health_port, "/live")
        print(f"\n/ready statuses until assigned: {[s for s in statuses if s]}\n/ready: {ready}\n/live: {live.strip()}")
        assert 503 in statuses and statuses[-1] == 200
        assert ready["partitions"] == {
            run.group_id(events): [f"{events}-0", f"{events}-1", f"{events}-2"],
            run.group_id(failing): [f"{failing}-0"],
        }
        assert live_status == 200 and json.loads(live)["live"] is True

        # -- the run: 30 events (every third filtered out) + 1 poison; 2 messages whose perform always fails
        values = [json.dumps({"n": i, "skip": i % 3 == 0}).encode() for i in range(30)] + [b"{not json"]
        written_events = produce(run.kafka.bootstrap, events, values)
        written_failing = produce(run.kafka.bootstrap, failing, [b'{"n": 1}', b'{"n": 2}'])

        def worker_done() -> bool:
            w = scrape(run.worker_port)
            return (counts(w, run.group_id(events), events)["performed"] == 20
                    and counts(w, run.group_id(failing), failing)["dead_lettered"] == 2)

        wait_until(worker_done, 120, what="20 performs and 2 dead letters in the worker's metrics",
                   alive=[listener, worker])
        for topic, written in ((events, written_events), (failing, written_failing)):
            want = end_offsets(written, topic)
            wait_until(lambda t=topic, w=want: committed_offsets(run.kafka.bootstrap, run.group_id(t)) == w, 60,
                       what=f"{topic} committed")
        time.sleep(3)  # anything still to come (a duplicate, a late retry) would show in the second scrape

        listener_metrics, worker_metrics = scrape(run.listener_port), scrape(run.worker_port)
        got = {
            ("listener", "events"): counts(listener_metrics, run.group_id(events), events),
            ("listener", "failing"): counts(listener_metrics, run.group_id(failing), failing),
            ("worker", "events"): counts(worker_metrics, run.group_id(events), events),
            ("worker", "failing"): counts(worker_metrics, run.group_id(failing), failing),
        }
        for (process, topic), values_ in got.items():
            print(f"[{process} /metrics] {topic}: " + " ".join(f"{k}={v}" for k, v in values_.items()))
        zero = dict.fromkeys(COUNTERS, 0)
        assert got == {
            ("listener", "events"): zero | {"fetched": 31, "filtered": 10, "enqueued": 20, "dead_lettered": 1},
            ("listener", "failing"): zero | {"fetched": 2, "enqueued": 2},
            ("worker", "events"): zero | {"performed": 20},
            ("worker", "failing"): zero | {"failed": 6, "retried": 4, "dead_lettered": 2},  # 2 x (1 + max_retries=2)
        }
        perform_runs = worker_metrics[("kbridge_perform_seconds_count",
                                       frozenset({"group_id": run.group_id(events), "topic": events}.items()))]
        assert perform_runs == 20
        lags = {k: v for k, v in listener_metrics.items() if k[0] == "kbridge_consumer_lag"}
        assert len(lags) == 4 and set(lags.values()) == {0.0}

        # -- the process title and the per-batch log lines
        with open(f"/proc/{listener.pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode().strip()
        print(f"process title: {title}")
        assert title.startswith(f"kbridge listener metrics-{run.run}: running fetched=33 filtered=10 enqueued=22")
        assert f"[kbridge.events] {run.group_id(failing)}: enqueued 2 message(s) of {failing}-0" in listener.log()

        # -- kbridge lag: nothing behind, then 5 behind once the listener is stopped and 5 more arrive
        output = run.kbridge("lag")
        print(output)
        rows = lag_rows(output)
        assert len(rows) == 4 and all(r["lag"] == "0" and r["committed"] == r["end"] for r in rows)
        assert "total lag: 0 in 4 partition(s) of 2 group(s)" in output
        later = scrape(run.worker_port)  # still exact a while later: no late retry, no duplicate
        assert [counts(later, run.group_id(t), t) for t in (events, failing)] == [
            got[("worker", "events")], got[("worker", "failing")]]
    finally:
        assert listener.stop(60) == 0, listener.log()[-3000:]

    more = produce(run.kafka.bootstrap, events, [json.dumps({"n": i}).encode() for i in range(5)])
    output = run.kbridge("lag", "--consumer-groups", events)
    print(output)
    rows = lag_rows(output)
    behind = {int(r["partition"]): int(r["lag"]) for r in rows}
    assert behind == {p: len(more.get(p, [])) for p in (0, 1, 2)}
    assert "total lag: 5 in 3 partition(s) of 1 group(s)" in output
    assert "*" not in output  # every end offset came from a high watermark


@pytest.mark.timeout(600)
def test_kbridge_worker_serves_its_prefork_pool_metrics(
    kbridge_kafka: KafkaService, kbridge_redis: RedisService
) -> None:
    """`kbridge worker --metrics-port`: the CLI path, with no metrics_port setting, on a run of its own."""
    run = MetricsRun(uuid.uuid4().hex[:8], kbridge_kafka, kbridge_redis.url, free_port(), 0, 0)
    env = {**run.env, "METRICS_WORKER_PORT": ""}
    events, failing = run.topic("events"), run.topic("failing")
    create_topics(run.kafka.bootstrap, [events, failing, f"{events}.dlq", f"{failing}.dlq"], 1)
    worker = processes.Process("kbridge-worker", [
        sys.executable, "-m", "kbridge", "worker", "--app", APP, "--metrics-port", str(run.worker_port),
        "-P", "prefork", "-c", "2", "-Q", f"kbridge-metrics-{run.run}", "-n", f"kbridge-worker-{run.run}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
    ], processes.child_env(env)).start()
    listener = processes.Process("listener", [sys.executable, "-m", "kbridge", "listen", "--app", APP],
                                 processes.child_env(env)).start()
    try:
        worker.wait_for_log("ready.", timeout=90)
        produce(run.kafka.bootstrap, events, [json.dumps({"n": i, "skip": i % 4 == 0}).encode() for i in range(12)])
        produce(run.kafka.bootstrap, failing, [b'{"n": 1}'])

        def done() -> bool:
            w = scrape(run.worker_port)
            return (counts(w, run.group_id(events), events)["performed"] == 9
                    and counts(w, run.group_id(failing), failing)["dead_lettered"] == 1)

        wait_until(done, 120, what="9 performs and 1 dead letter in the worker's metrics", alive=[worker, listener])
        time.sleep(3)
        w = scrape(run.worker_port)
        got = [counts(w, run.group_id(t), t) for t in (events, failing)]
        print(f"\n[kbridge worker /metrics] events: {got[0]}\n[kbridge worker /metrics] failing: {got[1]}")
        zero = dict.fromkeys(COUNTERS, 0)
        assert got == [zero | {"performed": 9}, zero | {"failed": 3, "retried": 2, "dead_lettered": 1}]
        assert "serving Prometheus metrics of this worker and its pool" in worker.log()
        assert "imported before kbridge could set" not in worker.log()
    finally:
        listener.stop(60)
        worker.stop()
