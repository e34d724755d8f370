"""unit: accepted messages become perform() runs, each one task: one per message, or batches of a partition.

With batch_consuming, the whole polled batch of the partition is one run, or runs of at
most max_batch_size.
"""

from __future__ import annotations

from .step import PartitionBatch, Step


class UnitStep(Step):
    def submit(self, batch: PartitionBatch) -> None:
        if batch.units is None:
            assert batch.accepted is not None, "the unit step comes after the filter step"
            batch.units = batch.route.units(batch.accepted) if batch.accepted else []
        self.forward(batch)
