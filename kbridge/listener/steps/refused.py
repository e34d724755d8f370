"""refused: a record the Kafka client could not decode, though its batch could be read, is dead-lettered in place.

It carries what could be read of it (value, key, the headers that decode) and its origin
coordinates, and drops out of the batch; the batch still covers its offset, so it is
marked with the rest once Kafka took the letter. If Kafka does not, the partition is
held here, and only the letters not yet taken are sent again.
"""

from __future__ import annotations

import logging

from ..undecodable import describe
from .context import StepContext
from .step import PartitionBatch, Step

log = logging.getLogger("kbridge.listener")


class RefusedStep(Step):
    def __init__(self, context: StepContext) -> None:
        super().__init__()
        self.context = context

    def submit(self, batch: PartitionBatch) -> None:
        if not batch.refused:
            self.forward(batch)
            return
        route, tp, ctx = batch.route, batch.tp, self.context
        for message in [m for m in batch.messages if m.offset in batch.refused]:
            error = batch.refused[message.offset]
            try:
                ctx.runtime.dead_letters.send(route.dead_letter_topic, message, error, 1, route.group_id)
            except Exception as exc:
                reason = f"dead letter of undecodable record {message.offset} not acknowledged: " \
                         f"{type(exc).__name__}: {exc}"
                raise self.stop_at(batch, message.offset, reason) from exc
            del batch.refused[message.offset]
            batch.messages.remove(message)
            ctx.stats.dead_lettered += 1
            log.warning("%s-%d@%d cannot be decoded by the Kafka client (%s); dead-lettered what could be read "
                        "of it to %s and went on with the next record", tp.topic, tp.partition, message.offset,
                        describe(error), route.dead_letter_topic)
            ctx.monitor.instrument("record.undecodable", group_id=ctx.group_id, topic=tp.topic,
                                   partition=tp.partition, offset=message.offset, error=describe(error),
                                   action="dead_lettered")
        self.forward(batch)
