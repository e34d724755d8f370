"""The listener's chain of steps: route -> after_fetch -> filter -> unit -> hand over -> mark.

Each step takes one partition's batch, does one thing to it and submits it to the
next step. A step that cannot go on asks to hold the partition by raising Hold, with
what is left to do and where to resume: the poll loop pauses the partition and, after
a backoff, submits exactly that again to exactly that step, so nothing before it runs
twice. Before raising, a step submits what it did finish downstream, so the offsets
of everything handled before the held message are marked and committed.

Flow-control steps (expire, delay, throttle) slot into the same chain.
"""

from .chain import Chain, build_chain
from .context import StepContext
from .step import Fetched, Hold, PartitionBatch, Pending, Step

__all__ = ["Chain", "Fetched", "Hold", "PartitionBatch", "Pending", "Step", "StepContext", "build_chain"]
