"""unit: how the accepted messages are handed over, each hand-over call confirmed on its own.

The backend turns what it is handed into perform() runs (tasks): one per message, or one per
batch with batch_consuming. With max_batch_size, each capped run is its own call, so a
failure stops at a run's boundary; otherwise everything goes in one call (one Redis
pipeline), and the backend splits it. The runs are not built here as well: on the hot path
that would make every message's task twice.
"""

from __future__ import annotations

from .step import PartitionBatch, Step


class UnitStep(Step):
    def submit(self, batch: PartitionBatch) -> None:
        if batch.handovers is None:
            assert batch.accepted is not None, "the unit step comes after the filter step"
            route, accepted = batch.route, batch.accepted
            if not accepted:
                batch.handovers = []
            elif route.batch_consuming and route.max_batch_size:
                batch.handovers = route.units(accepted)
            else:
                batch.handovers = [accepted]
        self.forward(batch)
