"""Exit codes and signals of the swarm, in one place so the docs, the supervisor and the nodes agree.

A node exits like the plain listener (0, 1, 2), plus 3 when it found its supervisor
gone: it stopped gracefully (committed what is safe, left its groups) on its own.
The supervisor exits 0 when every node stopped cleanly, 1 when it could not start
or a node failed while stopping, 2 when a node had to be killed (or exited 2)
because shutdown_timeout passed, or on a second stop signal.
"""

from __future__ import annotations

import signal

from ..listener.process import EXIT_FAILED, EXIT_OK, EXIT_SHUTDOWN_TIMEOUT

EXIT_ORPHANED = 3  # as Karafka's swarm orphaned_exit_code

__all__ = [
    "EXIT_FAILED", "EXIT_OK", "EXIT_ORPHANED", "EXIT_SHUTDOWN_TIMEOUT", "KILL_GRACE", "NODE_STOP_SIGNAL",
    "STOP_SIGNALS",
]

# Signals the supervisor turns into a graceful stop of every node. It forwards none of
# them as such: each node gets exactly one SIGTERM (its ListenerProcess treats a second signal as
# "exit now"), and nodes run in their own process group, so a terminal's Ctrl-C or Ctrl-\
# reaches the supervisor only.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
NODE_STOP_SIGNAL = signal.SIGTERM

# A node gets shutdown_timeout to stop by itself (and exit 2 if its groups do not stop
# in time); the supervisor SIGKILLs it only this much later, so the node's own code wins.
KILL_GRACE = 2.0
