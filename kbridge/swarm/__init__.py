"""Swarm: one supervisor process forking N listener nodes, as Karafka's Swarm does.

Why: a listener is one Python process, so CPU-heavy before_enqueue filters (and
deserializing in them) use one core at most. N nodes joining the same consumer
groups let Kafka spread the partitions across N processes, and the supervisor
keeps them healthy: it replaces a node that dies, falls silent, stalls or grows
past swarm_node_max_rss_mb.

    from kbridge.swarm import run
    sys.exit(run(app, app.routes.select(None), nodes=3))

or `python -m kbridge.swarm --app shop.kafka:app --nodes 3`.

The supervisor creates no Kafka client, producer or broker connection: each node
builds its own after the fork. Exit codes and signals: kbridge.swarm.codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .codes import EXIT_FAILED, EXIT_OK, EXIT_ORPHANED, EXIT_SHUTDOWN_TIMEOUT, KILL_GRACE, STOP_SIGNALS
from .node import NodeSetup
from .supervisor import Supervisor

if TYPE_CHECKING:
    from ..app import KBridge
    from ..config import Settings
    from ..routing import ConsumerGroup

__all__ = [
    "EXIT_FAILED", "EXIT_OK", "EXIT_ORPHANED", "EXIT_SHUTDOWN_TIMEOUT", "STOP_SIGNALS", "NodeSetup", "Supervisor",
    "run", "summary",
]


def run(
    app: KBridge, groups: list[ConsumerGroup], nodes: int | None = None, node_setup: NodeSetup | None = None
) -> int:
    """Supervise `nodes` listener nodes (default: the swarm_nodes setting) until stopped; the exit code.

    Call it from the main thread, before anything used the app's backends or
    dead-letter producer (the supervisor refuses to fork shared connections), and
    before starting threads or servers: node_setup(app, node_index) runs in each
    node after the fork, for whatever must exist once per node.
    """
    count = app.settings.swarm_nodes if nodes is None else nodes
    if count < 1:
        raise ValueError(f"a swarm needs at least one node; got {count} (set swarm_nodes or pass nodes=)")
    return Supervisor(app, groups, count, node_setup=node_setup).run()


def summary(settings: Settings, nodes: int | None = None) -> str:
    """One line for `kbridge info`: the swarm as `kbridge listen` would run it."""
    count = settings.swarm_nodes if nodes is None else nodes
    if count < 1:
        return "off (one listener process; kbridge listen --swarm N, or swarm_nodes=N)"
    cap = f"{settings.swarm_node_max_rss_mb} MB" if settings.swarm_node_max_rss_mb is not None else "no cap"
    return (
        f"{count} node(s); a node is replaced when silent > {settings.swarm_silence_timeout:g}s, its poll loop "
        f"stalled > {settings.swarm_stall_timeout:g}s, or RSS over {cap}; SIGKILL "
        f"{settings.shutdown_timeout + KILL_GRACE:g}s after SIGTERM; an orphaned node exits with {EXIT_ORPHANED}"
    )
