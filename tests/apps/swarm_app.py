"""The app the swarm tests run: pipeline's recording consumers, under swarm settings from the environment.

It shares pipeline's run id, Kafka, Redis and client_id ("pipe-<run>"), so the
PipelineRun helpers (seen, committed, wait_all_committed) work unchanged, but it
has its own Celery app and queue: its worker must know these routes.
MemoryHogConsumer's filter grows the listener node by SWARM_HOG_MB on a
{"hog": true} message, once per message (a Redis SETNX), to trip the memory cap.
"""

from __future__ import annotations

import os

from celery import Celery

from kbridge import KBridge, before_enqueue
from kbridge.testing.kafka import FAST_GROUP
from tests.apps.pipeline import BROKER_URL, CELERY_CONF, KAFKA, RUN, RecordingConsumer, store

QUEUE = f"kbridge-swarm-{RUN}"
HOG_MB = int(os.environ.get("SWARM_HOG_MB", "300"))

celery_app = Celery("swarm", broker=BROKER_URL)
celery_app.conf.update(CELERY_CONF, task_default_queue=QUEUE)

app = KBridge(
    client_id=f"pipe-{RUN}",
    # Tansu sometimes keeps a member that left in the next join, which then waits out the
    # rebalance timeout (max_poll_interval_ms, 300 s by default): cap that wait for restarts.
    kafka={"bootstrap_servers": KAFKA, **FAST_GROUP, "max_poll_interval_ms": 15000},
    celery=celery_app,
    shutdown_timeout=float(os.environ.get("SWARM_SHUTDOWN_TIMEOUT", "20")),
    redelivery_after=5.0,
    swarm_nodes=int(os.environ.get("SWARM_NODES", "2")),
    swarm_node_max_rss_mb=int(os.environ.get("SWARM_MAX_RSS_MB", "0")) or None,
    swarm_silence_timeout=float(os.environ.get("SWARM_SILENCE_TIMEOUT", "30")),
)

_hoard: list[bytes] = []


class MemoryHogConsumer(RecordingConsumer):
    @before_enqueue
    def hog(self) -> bool:
        p = self.params
        if p.payload.get("hog") and store().set(f"{RUN}:hogged:{p.topic}:{p.partition}:{p.offset}", os.getpid(),
                                                nx=True):
            _hoard.append(b"\x01" * (HOG_MB * 2**20))  # written, so resident: calloc'd zero pages would not count
        return True


for suffix in ("share", "kill", "orphan", "term", "cli"):
    app.topic(f"{RUN}.swarm-{suffix}", consumer=RecordingConsumer)
app.topic(f"{RUN}.swarm-memory", consumer=MemoryHogConsumer)
