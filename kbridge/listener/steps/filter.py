"""filter: the route's before_enqueue filters, per message, in offset order (delivery rules 5 and 6).

- falsy: the message is filtered out on purpose; it is not handed over, but counts as handled;
- a filter that raises (a payload it cannot parse, say) dead-letters that message at once:
  neither dropped nor retried forever.

If Kafka does not take such a dead letter, what came before the message goes on down the
chain and the partition is held at the message. On resume only its dead letter is sent
again, and the rest is filtered: each filter runs once per message, and each message is
counted once, however long the hold lasts.
"""

from __future__ import annotations

from ...params import Params, ParamsBatch
from .context import StepContext
from .step import PartitionBatch, Step


class _LetterNotTaken(Exception):
    """A raising filter's dead letter that Kafka did not acknowledge."""

    def __init__(self, error: Exception, cause: Exception) -> None:
        super().__init__(str(cause))
        self.error = error  # what the filter raised: the letter's content
        self.cause = cause  # why the letter was not taken: the hold's reason


class FilterStep(Step):
    def __init__(self, context: StepContext) -> None:
        super().__init__()
        self.context = context

    def submit(self, batch: PartitionBatch) -> None:
        route = batch.route
        if not route.consumer._filters:
            batch.accepted = list(batch.messages)
            self.forward(batch)
            return
        accepted: list[Params] = []
        for message in batch.messages:
            try:
                keep = self._accepts(batch, message)
            except _LetterNotTaken as stopped:
                batch.accepted = accepted
                exc = stopped.cause
                hold = self.stop_at(batch, message.offset, f"{type(exc).__name__}: {exc}")
                rest = hold.pending[-1].batch
                rest.accepted = None  # the rest is still to be filtered, from this message on
                rest.filter_errors[message.offset] = stopped.error  # but this one's filter already ran
                raise hold from exc
            if keep:
                accepted.append(message)
            else:
                batch.filtered.append(message)
        batch.accepted = accepted
        self.forward(batch)

    def _accepts(self, batch: PartitionBatch, message: Params) -> bool:
        """Raises _LetterNotTaken only when the message's dead letter was not acknowledged."""
        route, ctx = batch.route, self.context
        error = batch.filter_errors.get(message.offset)  # its filter raised before a hold: only the letter is due
        if error is None:
            try:
                accepted = route.consumer(route, ParamsBatch([message])).run_filters()
            except Exception as exc:
                ctx.monitor.instrument("filter.failed", group_id=ctx.group_id, topic=message.topic,
                                       partition=message.partition, offset=message.offset,
                                       error=f"{type(exc).__name__}: {exc}")
                error = exc
        if error is not None:
            try:
                ctx.runtime.dead_letters.send(route.dead_letter_topic, message, error, 1, route.group_id)
            except Exception as cause:
                raise _LetterNotTaken(error, cause) from cause
            ctx.stats.dead_lettered += 1
            return False
        if not accepted:
            ctx.stats.filtered += 1
            if ctx.monitor.listens("filter.rejected"):
                ctx.monitor.instrument("filter.rejected", group_id=ctx.group_id, topic=message.topic,
                                       partition=message.partition, offset=message.offset)
        return bool(accepted)
