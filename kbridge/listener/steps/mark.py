"""mark: everything the batch covers is handled, so its last offset may be committed (delivery rule 1).

On topics with automatically_mark_as_consumed=False only perform()'s own marks count.
"""

from __future__ import annotations

from .context import StepContext
from .step import PartitionBatch, Step


class MarkStep(Step):
    def __init__(self, context: StepContext) -> None:
        super().__init__()
        self.context = context

    def submit(self, batch: PartitionBatch) -> None:
        if batch.route.automatically_mark_as_consumed and batch.last_offset >= 0:
            self.context.offsets.mark(batch.tp, batch.last_offset)
        self.forward(batch)
