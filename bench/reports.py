"""Benchmark: what `web_reports` costs the listener, as a same-run ratio of enqueue throughput.

The same backlog is drained eight times by fresh consumer groups, off, on, on, off, off, on,
on, off (so neither side is favoured by a burst of load on the shared machine, or by coming
first), each time by kbridge's own GroupProcessor enqueuing one Celery task per message into
Redis. "On" adds what a listener process with web_reports adds: the pause step in the chain
and a ListenerReporter thread, at the default 5 s interval, with its probe consumer.

The ratio compares messages per CPU second of the listener process (every thread, the
reporter's included). The listener is CPU-bound, so this is its throughput; wall-clock
rates, printed beside it, swing by about 6% between identical runs on a shared 2-core
machine, more than the effect measured.
"""

from __future__ import annotations

import statistics
from typing import Any

from kbridge import BaseConsumer, KBridge
from kbridge.listener.controls import Controls
from kbridge.reports import ListenerReporter

from .app import build
from .harness import Bench, TimedProcessor, create_topic, in_process_listener, produce, wait_done
from .results import Result, Target

NAME = "reports"
ORDER = ("off", "on", "on", "off", "off", "on", "on", "off")


class Noop(BaseConsumer):
    def perform(self) -> None: ...


def _drain(bench: Bench, app: KBridge, group: str, ends: dict[Any, int], queue: str,
           reports: bool) -> tuple[float, float]:
    """Messages per wall second and per CPU second enqueued by one fresh group draining the whole backlog."""
    n = sum(ends.values())
    controls = Controls() if reports else None
    reporters: list[ListenerReporter] = []

    def start_reporter(processor: TimedProcessor) -> None:
        if controls is not None:
            reporters.append(ListenerReporter(app.settings, [processor], controls, processor.runtime.monitor))
            reporters[0].start()

    try:
        with in_process_listener(bench, app, group, ends, f"{NAME}-{group}",
                                 paused=controls.is_paused if controls else None,
                                 before_start=start_reporter) as processor:
            wait_done(processor, timeout=max(600, n / 20), what=f"{NAME} {group}")
            assert processor.stats.enqueued == n, (processor.stats.enqueued, n)
    finally:
        for reporter in reporters:
            reporter.close()
        bench.redis.delete(queue)
    return n / processor.elapsed, n / processor.cpu_seconds


def run(bench: Bench) -> Result:
    topic = bench.config.topic(NAME)
    create_topic(bench, topic)
    ends = produce(bench, topic, bench.sizes.messages)
    n = sum(ends.values())
    kb, celery_app = build(bench.config)
    app = KBridge(client_id=f"{bench.config.client_id}-reports", kafka=dict(kb.settings.kafka), celery=celery_app,
                  max_poll_records=kb.settings.max_poll_records, web_reports=True, report_interval=5.0)
    for i, mode in enumerate(ORDER):
        # a queue per run: the Redis ledger of a later run must not see an earlier run's tasks vanish
        app.consumer_group(f"{mode}{i}").topic(topic, consumer=Noop, queue=bench.config.queue(f"{NAME}-{mode}{i}"))
    wall: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    for i, mode in enumerate(ORDER):
        per_wall, per_cpu = _drain(bench, app, f"{mode}{i}", ends, bench.config.queue(f"{NAME}-{mode}{i}"),
                                   reports=mode == "on")
        wall[mode].append(per_wall)
        cpu[mode].append(per_cpu)
        print(f"[bench] reports {mode}{i}: {per_wall:.0f} msg/s, {per_cpu:.0f} msg per CPU second", flush=True)
    on, off = statistics.median(cpu["on"]), statistics.median(cpu["off"])
    wall_on, wall_off = statistics.median(wall["on"]), statistics.median(wall["off"])
    return Result("web reports on (5 s, the default)", "msg/CPU s", value=on, baseline=off,
                  baseline_name="reports off", target=Target(">=", 0.98),
                  details={"messages": n, "cpu_on": [round(r) for r in cpu["on"]],
                           "cpu_off": [round(r) for r in cpu["off"]],
                           "wall_on": [round(r) for r in wall["on"]], "wall_off": [round(r) for r in wall["off"]],
                           "wall_ratio": round(wall_on / wall_off, 3)})
