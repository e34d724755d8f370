"""The core promise on real services: every accepted message performed, none filtered run, all committed."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from kbridge.testing.kafka import Stream, end_offsets, wait_until

from .conftest import PipelineRun

pytestmark = pytest.mark.integration

MESSAGES = 2000


def events(n: int, skip_every: int = 4) -> list[bytes]:
    return [json.dumps({"n": i, "skip": i % skip_every == 0}).encode() for i in range(n)]


def check_round(pipeline: PipelineRun, topic: str, n: int) -> None:
    pipeline.create(topic, 3)
    values = events(n)
    written, keep = produce_tracked(pipeline, topic, values)
    listener = pipeline.listener(topic)
    try:
        started = time.monotonic()
        wait_until(lambda: set(pipeline.seen(topic)) >= keep, 120, what=f"{len(keep)} performs on {topic}",
                   alive=[listener])
        pipeline.wait_all_committed(topic, written)
        elapsed = time.monotonic() - started
    finally:
        rc = listener.stop()
    seen = pipeline.seen(topic)
    ran_filtered = set(seen) - keep
    dupes = sum(c - 1 for c in seen.values())
    print(f"\n{topic}: produced={n} accepted={len(keep)} performed={len(seen)} "
          f"filtered_run={len(ran_filtered)} duplicates={dupes} in {elapsed:.1f}s")
    assert set(seen) == keep, f"lost {len(keep - set(seen))}, filtered-but-run {len(ran_filtered)}"
    assert pipeline.committed(topic) == end_offsets(written, topic)
    assert rc == 0, listener.log()[-3000:]


def produce_tracked(pipeline: PipelineRun, topic: str, values: list[bytes]):  # type: ignore[no-untyped-def]
    """Produce, then note each message's (partition, offset) and whether the filter should accept it."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=pipeline.kafka.bootstrap, linger_ms=5)
    futures = [producer.send(topic, value=v) for v in values]
    producer.flush()
    written: dict[int, list[int]] = {}
    keep: set[tuple[int, int]] = set()
    for value, fut in zip(values, futures, strict=True):
        md = fut.get(timeout=30)
        written.setdefault(md.partition, []).append(md.offset)
        if not json.loads(value)["skip"]:
            keep.add((md.partition, md.offset))
    producer.close()
    return written, keep


def test_celery_backend_performs_every_accepted_message(pipeline: PipelineRun, celery_worker) -> None:
    check_round(pipeline, pipeline.topic("events"), MESSAGES)


def test_inline_backend_performs_every_accepted_message(pipeline: PipelineRun) -> None:
    check_round(pipeline, pipeline.topic("inline"), MESSAGES)


def test_binary_payload_reaches_perform_byte_for_byte(pipeline: PipelineRun, celery_worker) -> None:
    topic = pipeline.topic("binary")
    pipeline.create(topic, 1)
    values = [bytes(range(256)), b"\xff\xfe\x00", b"plain text", b"", os.urandom(64), "żółw".encode()]
    written = pipeline.produce(topic, values)
    listener = pipeline.listener(topic)
    try:
        wait_until(lambda: len(pipeline.extra(topic)) == len(values), 60, what="binary performs", alive=[listener])
    finally:
        listener.stop()
    got = pipeline.extra(topic)
    assert [got[(0, o)] for o in written[0]] == [v.hex() for v in values]


@pytest.mark.slow
def test_sigterm_mid_stream_then_restart_loses_nothing(pipeline: PipelineRun, celery_worker) -> None:
    topic = pipeline.topic("stop")
    pipeline.create(topic, 3)
    first = pipeline.listener(topic, name="listener-1")
    stream = Stream(pipeline.kafka.bootstrap, topic, events(3000), rate=200)  # 15 s: outlasts a slow stop
    stream.start()
    wait_until(lambda: len(pipeline.seen(topic)) >= 200, 60, interval=0.05, what="first performs", alive=[first])
    first.signal(signal.SIGTERM)
    assert first.wait(60) == 0, first.log()[-3000:]
    committed_at_stop = sum(pipeline.committed(topic).values())
    assert "SIGTERM received" in first.log()
    assert stream.is_alive(), "the stream ended before the stop; slow it down"

    second = pipeline.listener(topic, name="listener-2")
    stream.join(60)
    written = stream.written()
    keep = {placed for placed, v in zip(stream.placed, stream.values, strict=True) if not json.loads(v)["skip"]}
    try:
        wait_until(lambda: set(pipeline.seen(topic)) >= keep, 120, what="all performs after restart", alive=[second])
        pipeline.wait_all_committed(topic, written)
    finally:
        assert second.stop() == 0
    seen = pipeline.seen(topic)
    dupes = sum(c - 1 for c in seen.values())
    print(f"\n{topic}: produced=3000 accepted={len(keep)} committed_at_stop={committed_at_stop} "
          f"performed={len(seen)} duplicates={dupes} lost={len(keep - set(seen))}")
    assert set(seen) == keep
