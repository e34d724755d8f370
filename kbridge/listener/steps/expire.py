"""expire (expire_after=SECONDS): a message already older than that when fetched is not handed over.

Stale work (a notification nobody waits for any more, a cache refresh superseded since)
is dropped rather than done late: the message stays covered by the batch, so it is
committed with the rest, and it is counted (PartitionBatch.expired, Stats.expired, the
`expired` event and metric). Age is the fetch time minus the Kafka timestamp; a message
without a timestamp never expires.
"""

from __future__ import annotations

import time

from ...params import Params
from .context import StepContext
from .step import PartitionBatch, Step


class ExpireStep(Step):
    def __init__(self, context: StepContext, seconds: float) -> None:
        super().__init__()
        self.context = context
        self.ms = seconds * 1000.0

    def submit(self, batch: PartitionBatch) -> None:
        now_ms = time.time() * 1000.0
        fresh: list[Params] = []
        expired: list[Params] = []
        for m in batch.messages:
            ts = m.timestamp_ms
            old = ts is not None and ts >= 0 and (m.receive_time_ms or now_ms) - ts > self.ms \
                and m.offset not in batch.refused  # a record the client refused is dead-lettered, stale or not
            (expired if old else fresh).append(m)
        if expired:
            ctx = self.context
            batch.messages = fresh
            batch.expired += len(expired)
            ctx.stats.expired += len(expired)
            ctx.monitor.instrument("expired", group_id=ctx.group_id, topic=batch.tp.topic,
                                   partition=batch.tp.partition, messages=len(expired),
                                   first_offset=expired[0].offset, last_offset=expired[-1].offset)
        self.forward(batch)
