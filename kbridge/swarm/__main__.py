"""`python -m kbridge.swarm --app module:attr --nodes N [--consumer-groups a,b]`.

The stand-alone entry point until `kbridge listen --swarm N` is wired in the CLI;
tests and the benchmark start the supervisor through it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import KBridgeError
from ..instrumentation.logging import LoggingListener, quiet_kafka_client
from ..loader import load_app
from . import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kbridge.swarm", description=__doc__)
    parser.add_argument("--app", default=None, help="module:attribute of the KBridge app (or KBRIDGE_APP)")
    parser.add_argument("--nodes", type=int, default=None, help="listener nodes (default: the swarm_nodes setting)")
    parser.add_argument("--consumer-groups", default="", metavar="A,B", help="only these consumer groups")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
                        stream=sys.stderr)
    quiet_kafka_client(logging.getLogger().level)
    try:
        app = load_app(args.app or os.environ.get("KBRIDGE_APP"))
        groups = app.routes.select([n.strip() for n in args.consumer_groups.split(",") if n.strip()])
        nodes = args.nodes if args.nodes is not None else app.settings.swarm_nodes
        if nodes < 1:
            parser.error("give --nodes N (N >= 1) or set swarm_nodes")
    except KBridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    LoggingListener.states().attach(app.monitor)
    return run(app, groups, nodes)


if __name__ == "__main__":
    sys.exit(main())
