"""Fault scenarios on the listener side, with real processes and signals.

Each prints produced / performed / duplicated / lost / dead-lettered and asserts 0 lost.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import signal
import time

import pytest

from kbridge.testing import processes
from kbridge.testing.kafka import Stream, end_offsets, wait_until
from kbridge.testing.processes import Process
from kbridge.testing.services import free_port, kafka_service, redis_service

from .conftest import CELERY_APP, PipelineRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def events(n: int) -> list[bytes]:
    return [json.dumps({"n": i, "skip": i % 10 == 0}).encode() for i in range(n)]


def accepted(stream: Stream) -> set[tuple[int, int]]:
    return {placed for placed, value in zip(stream.placed, stream.values, strict=True) if not json.loads(value)["skip"]}


def finish(
    pipeline: PipelineRun, topic: str, stream: Stream, listener: Process, name: str, timeout: float = 180
) -> None:
    """Wait for the stream's accepted messages to be performed and all offsets committed, then report."""
    stream.join(120)
    keep = accepted(stream)
    written = stream.written()
    try:
        wait_until(lambda: set(pipeline.seen(topic)) >= keep, timeout, what=f"{len(keep)} performs", alive=[listener])
        pipeline.wait_all_committed(topic, written, timeout=60)
    except AssertionError:
        missing = sorted(keep - set(pipeline.seen(topic)))
        print(f"[{name}] missing {len(missing)} of {len(keep)}, e.g. {missing[:10]}; "
              f"committed={pipeline.committed(topic)} end={end_offsets(written, topic)}")
        raise
    finally:
        rc = listener.stop()
    seen = pipeline.seen(topic)
    lost = keep - set(seen)
    dupes = sum(c - 1 for c in seen.values())
    print(f"\n[{name}] produced={len(stream.values)} accepted={len(keep)} performed={len(seen)} "
          f"duplicated={dupes} lost={len(lost)} dead_lettered=0")
    assert not lost
    assert set(seen) == keep, "a filtered-out message was performed"
    assert pipeline.committed(topic) == end_offsets(written, topic)
    assert rc == 0, listener.log()[-3000:]


def test_kill_9_listener_three_times_while_streaming_loses_nothing(
    pipeline: PipelineRun, celery_worker: Process
) -> None:
    topic = pipeline.topic("stream")
    pipeline.create(topic, 3)
    stream = Stream(pipeline.kafka.bootstrap, topic, events(10_000), rate=400)
    stream.start()
    rng = random.Random()
    kills = []
    for i in range(3):
        listener = pipeline.listener(topic, name=f"listener-{i}")
        before = len(pipeline.seen(topic))
        wait_until(lambda b=before: len(pipeline.seen(topic)) > b + 50, 60, interval=0.1,
                   what="the listener to make progress", alive=[listener])
        time.sleep(rng.uniform(0.2, 2.0))
        listener.kill_group()
        kills.append(len(pipeline.seen(topic)))
    assert stream.is_alive(), "the stream ended before the third kill; slow it down"
    print(f"\n[kill-9-listener] killed at performed counts {kills}")
    finish(pipeline, topic, stream, pipeline.listener(topic, name="listener-final"), "kill-9-listener x3")


def test_two_listeners_in_one_group_one_killed_the_other_takes_over(
    pipeline: PipelineRun, celery_worker: Process
) -> None:
    topic = pipeline.topic("pair")
    pipeline.create(topic, 4)
    first = pipeline.listener(topic, name="listener-a")
    second = pipeline.listener(topic, name="listener-b")
    stream = Stream(pipeline.kafka.bootstrap, topic, events(4000), rate=400)
    stream.start()
    wait_until(lambda: first.log().count("partitions assigned: " + topic) >= 1
               and second.log().count("partitions assigned: " + topic) >= 1,
               60, what="both listeners to own partitions", alive=[first, second])
    wait_until(lambda: len(pipeline.seen(topic)) > 300, 60, what="progress", alive=[first, second])
    first.kill_group()
    finish(pipeline, topic, stream, second, "two-listeners-one-killed")
    assert "partitions revoked" in second.log(), "the survivor never rebalanced"


def test_redis_outage_mid_stream_pauses_then_resumes(pipeline: PipelineRun) -> None:
    """The listener pauses, retries and resumes by itself, and nothing is lost.

    kombu's Redis transport takes a task off the queue (BRPOP) and records it as unacked
    in a second command; a task caught between the two when Redis stops, then dropped by
    the worker, would be gone. kbridge's delivery ledger re-queues such tasks; the count
    of tasks lost there without the ledger is printed as in_delivery_window.
    """
    broker = redis_service(persistent=True)  # a broker keeps its queue across a restart
    run = dataclasses.replace(pipeline, broker_url=broker.url)
    worker = processes.celery_worker(CELERY_APP, run.env, [run.queue], name="outage-worker").start()
    # Celery 5.7's worker does not always survive a broker outage under load (celery#8091,
    # #10302): it may exit, so it runs under a supervisor, as in production.
    supervisor = processes.Supervisor(worker)
    supervisor.start()
    listener = None
    try:
        worker.wait_for_log("ready.", timeout=60)
        topic = run.topic("outage")
        run.create(topic, 3)
        listener = run.listener(topic)
        stream = Stream(run.kafka.bootstrap, topic, events(6000), rate=250)
        stream.start()
        wait_until(lambda: len(run.seen(topic)) > 300, 60, what="progress before the outage", alive=[listener])
        broker.stop()
        time.sleep(2)  # the listener is paused now; what it committed was enqueued before the outage
        enqueued_before = {tp.partition: o for tp, o in run.committed(topic).items()}
        time.sleep(8)
        during = len(run.seen(topic))
        broker.start()
        assert stream.is_alive(), "the stream ended during the outage; slow it down"
        try:
            wait_until(lambda: len(run.seen(topic)) > during + 100, 20, what="the worker to resume")
        except AssertionError:
            # Celery can reconnect and then never consume again (celery#8091): restart the
            # worker, as a liveness probe would. Its unacked tasks return after visibility_timeout.
            print("\n[redis-outage] celery worker stalled after reconnecting; restarting it")
            worker.kill_group()
        stream.join(120)
        keep = accepted(stream)
        try:
            wait_until(lambda: set(run.seen(topic)) >= keep, 240, what="every accepted message performed",
                       alive=[listener])
        finally:
            seen = run.seen(topic)
            lost = keep - set(seen)
            requeued = sum(int(n) for n in re.findall(r"re-queued (\d+) task", listener.log()))
            print(f"\n[redis-outage-10s] produced={len(stream.values)} accepted={len(keep)} performed={len(seen)} "
                  f"duplicated={sum(c - 1 for c in seen.values())} lost={len(lost)} dead_lettered=0 "
                  f"worker_restarts={supervisor.restarts} requeued_by_ledger={requeued} "
                  f"enqueued_before_outage={sum(enqueued_before.values())} missing={sorted(lost)[:8]}")
        run.wait_all_committed(topic, stream.written(), timeout=60)
        assert not lost
        assert set(seen) <= keep, "a filtered-out message was performed"
        log = listener.log()
        assert "paused" in log and "resumed" in log, log[-3000:]
        assert log.count("Traceback") == 0, "expected one line per state change, not tracebacks"
    finally:
        if listener is not None:
            assert listener.stop() == 0
        supervisor.stop()
        broker.stop()


def test_shutdown_timeout_exits_with_code_2(pipeline: PipelineRun) -> None:
    run = dataclasses.replace(pipeline)
    topic = run.topic("sleepy")  # inline; perform sleeps 4s
    run.create(topic, 1)
    run.produce(topic, [b'{"n": 1}', b'{"n": 2}'])
    listener = processes.listener(
        "tests.apps.pipeline:app", {**run.env, "PIPELINE_SHUTDOWN_TIMEOUT": "1"}, groups=[topic]
    ).start()
    store = run.store()
    try:
        wait_until(lambda: store.keys(f"{run.run}:started:{topic}:*"), 60, what="perform to start", alive=[listener])
        started = time.monotonic()
        listener.signal(signal.SIGTERM)
        rc = listener.wait(30)
        took = time.monotonic() - started
    finally:
        listener.stop()
    print(f"\n[shutdown-timeout] exit code {rc} after {took:.1f}s")
    assert rc == 2
    assert took < 3.5, "it waited for perform instead of honouring shutdown_timeout"
    assert "shutdown_timeout of 1.0s passed" in listener.log()


def test_kafka_unreachable_at_start_is_waited_out(pipeline: PipelineRun) -> None:
    """The listener starts before its broker exists, backs off with a clear line, then consumes."""
    port = free_port()
    topic = pipeline.topic("inline")
    env = {**pipeline.env, "PIPELINE_KAFKA": f"127.0.0.1:{port}"}
    listener = processes.listener("tests.apps.pipeline:app", env, groups=[topic]).start()
    broker = None
    try:
        listener.wait_for_log("no Kafka broker reachable", timeout=60)
        time.sleep(3)
        assert listener.proc is not None and listener.proc.poll() is None, "the listener gave up"
        broker = kafka_service(port)
        run = dataclasses.replace(pipeline, kafka=broker)
        run.create(topic, 1)
        written = run.produce(topic, events(100))[0]
        keep = {(0, o) for i, o in enumerate(written) if i % 10}
        wait_until(lambda: {k for k in run.seen(topic) if k in keep} == keep, 90, what="performs after Kafka came up",
                   alive=[listener])
        print(f"\n[kafka-unreachable-at-start] produced=100 performed={len(keep)} lost=0 "
              f"reachable-again logged={'connected to Kafka' in listener.log()}")
    finally:
        assert listener.stop() == 0, listener.log()[-3000:]
        if broker is not None:
            broker.stop()
    assert "connected to Kafka" in listener.log()
    assert listener.log().count("no Kafka broker reachable") <= 3, "one line per state change, not a storm"


def test_filters_run_once_per_message_across_a_broker_outage(pipeline: PipelineRun) -> None:
    """Messages fetched while the Celery broker is down are held and retried many times: their filter still
    runs once each, and the listener's filtered counter counts each filtered message once."""
    broker = redis_service(persistent=True)  # keeps the tasks enqueued before the outage
    run = dataclasses.replace(pipeline, broker_url=broker.url)
    topic = run.topic("filter-once")
    run.create(topic, 2)
    listener = run.listener(topic)
    try:
        first = run.produce(topic, events(40))
        wait_until(lambda: sum(run.committed(topic).values()) == 40, 90, what="the first 40 enqueued",
                   alive=[listener])
        broker.stop()
        second = run.produce(topic, [json.dumps({"n": 40 + i, "skip": i % 4 == 0}).encode() for i in range(40)])
        wait_until(lambda: listener.log().count("paused") >= 1 and run.filter_calls(topic) == 80, 30,
                   what="the second part filtered and held", alive=[listener])
        time.sleep(6)  # several retries of each held partition, with Redis still down
        broker.start()
        written = {p: first.get(p, []) + second.get(p, []) for p in set(first) | set(second)}
        run.wait_all_committed(topic, written, timeout=60)
        queued = broker_queue_length(run)
    finally:
        code = listener.stop()
        broker.stop()
    log = listener.log()
    calls = run.store().hgetall(f"{run.run}:filter-calls:{topic}")
    stats = re.findall(r"stopped: fetched=(\d+) enqueued=(\d+) filtered=(\d+)", log)
    attempts = [int(n) for n in re.findall(r"resumed \S+ after (\d+) attempt", log)]
    print(f"\n[filter-once] messages=80 filter_calls={sum(int(v) for v in calls.values())} "
          f"max_calls_per_offset={max(int(v) for v in calls.values())} stats={stats} resumed_after={attempts}")
    assert attempts and max(attempts) >= 3, log[-3000:]  # held messages were retried several times
    assert code == 0, log[-3000:]
    assert len(calls) == 80 and {int(v) for v in calls.values()} == {1}, calls
    assert stats == [("80", "66", "14")], log[-3000:]  # 4 of the first 40 and 10 of the second skip
    assert queued == 66  # each accepted message enqueued once (no worker runs here)


def broker_queue_length(run: PipelineRun) -> int:
    import redis

    return int(redis.Redis.from_url(run.broker_url).llen(run.queue))
