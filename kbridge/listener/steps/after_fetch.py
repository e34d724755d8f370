"""after_fetch: the route's after_fetch callbacks see every fetched message of the partition, before its filters.

Callbacks observe; one that raises is logged and the batch goes on (kbridge.callbacks).
"""

from __future__ import annotations

from ... import callbacks
from ...params import ParamsBatch
from .step import PartitionBatch, Step


class AfterFetchStep(Step):
    def submit(self, batch: PartitionBatch) -> None:
        if batch.messages and callbacks.declares(batch.route, callbacks.AFTER_FETCH):
            batch.callback_errors += callbacks.fire(callbacks.AFTER_FETCH, batch.route, ParamsBatch(batch.messages))
        self.forward(batch)
