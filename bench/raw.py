"""Benchmark 1, the baseline: plain kafka-python consume + json.loads, no kbridge.

Manual assignment (no group join), max_poll_records 2000. This is the ceiling for
anything that reads Kafka from one Python process, so kbridge's throughput is
reported as a share of it, measured on the very same messages just before and just
after kbridge reads them.
"""

from __future__ import annotations

import json
import time

from .config import DEFAULT_MAX_POLL_RECORDS
from .harness import Bench, Ends, assigned_consumer, create_topic, produce
from .results import Result

MAX_POLL_RECORDS = DEFAULT_MAX_POLL_RECORDS  # 2000; --max-poll-records changes kbridge's side only


def consume_once(bench: Bench, topic: str, n: int) -> float:
    """Seconds from the first poll until n messages were read and parsed."""
    consumer, _ = assigned_consumer(bench, topic, max_poll_records=MAX_POLL_RECORDS)
    try:
        seen = 0
        started = time.perf_counter()
        deadline = started + 120
        while seen < n:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    json.loads(record.value)
                seen += len(records)
            if time.perf_counter() > deadline:
                raise TimeoutError(f"raw consume read {seen} of {n} messages of {topic} in 120s")
        return time.perf_counter() - started
    finally:
        consumer.close()


def times(bench: Bench, topic: str, ends: Ends, repeats: int) -> list[float]:
    """Seconds for each of `repeats` full reads of the topic."""
    n = sum(ends.values())
    return [consume_once(bench, topic, n) for _ in range(repeats)]


class Bracket:
    """Raw reads of one topic taken on both sides of the kbridge run they are compared with.

    One read lasts ~1 s and the machine is shared: reading before and after keeps a burst of
    load at either moment from deciding the ratio. The fastest read is taken: some reads wait
    out a whole fetch_max_wait_ms (about 0.5 s) on a partition already drained, which is
    Tansu's timing, not reading, and the fastest is the hardest baseline to meet.
    """

    def __init__(self, bench: Bench, topic: str, ends: Ends) -> None:
        self.bench, self.topic, self.ends = bench, topic, ends
        self.seconds: list[float] = []

    def __enter__(self) -> Bracket:
        self.seconds += times(self.bench, self.topic, self.ends, (self.bench.sizes.raw_repeats + 1) // 2)
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.seconds += times(self.bench, self.topic, self.ends, self.bench.sizes.raw_repeats // 2)

    @property
    def rate(self) -> float:
        return sum(self.ends.values()) / min(self.seconds)

    def details(self) -> dict[str, object]:
        return {"raw_seconds": [round(t, 3) for t in self.seconds], "raw_messages": sum(self.ends.values())}


def run(bench: Bench) -> Result:
    topic = bench.config.topic("raw")
    create_topic(bench, topic)
    ends = produce(bench, topic, bench.sizes.messages)
    seconds = times(bench, topic, ends, bench.sizes.raw_repeats)
    return Result("raw consume (baseline)", "msg/s", value=sum(ends.values()) / min(seconds),
                  details={"raw_seconds": [round(t, 3) for t in seconds], "raw_messages": sum(ends.values())})
