"""Benchmark: what `web_reports` costs the listener.

Two measures, both in one run:

- The reporter's own CPU. A listener with reports on adds a reporter thread (with its probe
  consumer, commands consumer and producer) and a pause step that makes one dict lookup per
  fetched batch. After each drain below, the listener stays idle for IDLE_SECONDS, and the
  process's CPU time over that window is read with reports off and on. The difference per
  second, against the CPU a busy listener spends per second, is the share of the listener's
  work that reports take. A process's own CPU time hardly depends on what else the shared
  machine runs, so this is the figure the target applies to.
- Drains with reports off and on. The same backlog is drained eight times by fresh consumer
  groups, off, on, on, off, off, on, on, off, each by kbridge's own GroupProcessor enqueuing
  one Celery task per message into Redis; the ratio compares messages per CPU second. On a
  shared 2-core machine identical drains differ by about 5%, more than the effect, so this
  row has no target: it shows that nothing larger hides in the hot path.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from kbridge import BaseConsumer, KBridge
from kbridge.listener.controls import Controls
from kbridge.reports import ListenerReporter

from .app import build
from .harness import Bench, TimedProcessor, create_topic, in_process_listener, produce, wait_done
from .results import Result, Target

NAME = "reports"
ORDER = ("off", "on", "on", "off", "off", "on", "on", "off")
IDLE_SECONDS = 5.0  # a report interval (the default) at least, so each window holds one report


class Noop(BaseConsumer):
    def perform(self) -> None: ...


class Drain:
    """One fresh group draining the whole backlog, then idling."""

    def __init__(self, processor: TimedProcessor, idle_cpu: float) -> None:
        n = sum(processor.ends.values())
        self.per_wall = n / processor.elapsed  # messages per second
        self.per_cpu = n / processor.cpu_seconds  # messages per CPU second of the process
        self.busy_cpu = processor.cpu_seconds / processor.elapsed  # CPU seconds per second while draining
        self.idle_cpu = idle_cpu  # CPU seconds per second while idle afterwards


def _drain(bench: Bench, app: KBridge, group: str, ends: dict[Any, int], queue: str, reports: bool) -> Drain:
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
            started = time.process_time()
            time.sleep(IDLE_SECONDS)
            idle_cpu = (time.process_time() - started) / IDLE_SECONDS
    finally:
        for reporter in reporters:
            reporter.close()
        bench.redis.delete(queue)
    return Drain(processor, idle_cpu)


def run(bench: Bench) -> list[Result]:
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
    drains: dict[str, list[Drain]] = {"off": [], "on": []}
    for i, mode in enumerate(ORDER):
        d = _drain(bench, app, f"{mode}{i}", ends, bench.config.queue(f"{NAME}-{mode}{i}"), reports=mode == "on")
        drains[mode].append(d)
        print(f"[bench] reports {mode}{i}: {d.per_wall:.0f} msg/s, {d.per_cpu:.0f} msg per CPU second; "
              f"idle {1000 * d.idle_cpu:.1f} ms CPU/s", flush=True)

    def median(mode: str, what: str) -> float:
        return float(statistics.median(getattr(d, what) for d in drains[mode]))

    def listed(mode: str, what: str, scale: float = 1.0) -> list[float]:
        return [round(getattr(d, what) * scale, 1) for d in drains[mode]]

    reporter_cpu = max(0.0, median("on", "idle_cpu") - median("off", "idle_cpu"))
    busy_cpu = statistics.median(d.busy_cpu for d in drains["off"] + drains["on"])
    share = Result("web reports: reporter CPU / busy listener CPU", "CPU s/s", value=reporter_cpu,
                   baseline=busy_cpu, baseline_name="busy listener", target=Target("<=", 0.02),
                   details={"idle_cpu_ms_per_s_on": listed("on", "idle_cpu", 1000),
                            "idle_cpu_ms_per_s_off": listed("off", "idle_cpu", 1000),
                            "busy_cpu": listed("off", "busy_cpu", 1) + listed("on", "busy_cpu", 1),
                            "idle_seconds": IDLE_SECONDS})
    drained = Result("web reports on vs off, draining (5 s, the default)", "msg/CPU s",
                     value=median("on", "per_cpu"), baseline=median("off", "per_cpu"), baseline_name="reports off",
                     details={"messages": n, "cpu_on": listed("on", "per_cpu"), "cpu_off": listed("off", "per_cpu"),
                              "wall_on": listed("on", "per_wall"), "wall_off": listed("off", "per_wall"),
                              "wall_ratio": round(median("on", "per_wall") / median("off", "per_wall"), 3)})
    return [share, drained]
