"""`flask kbridge ...`: the kbridge command, run for the KBridge bound to this Flask app.

It delegates every argument to kbridge's own click group with the app object as the
root `obj`, so each kbridge command (listen, info, flow, worker, dlq, ...) works under
`flask` without --app and without being listed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ...app import KBridge

COMMAND_NAME = "kbridge"


def kbridge_command(kbridge_app: KBridge) -> click.Command:
    from ...cli import main

    @click.command(
        COMMAND_NAME,
        context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
        add_help_option=False,  # --help goes to kbridge's group, which knows the subcommands
        short_help=f"kbridge: {', '.join(sorted(main.commands))} (see flask kbridge --help).",
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        """Run a kbridge command for this Flask app's KBridge."""
        # A fresh root context whose obj is the app: kbridge.cli's _load picks it up.
        main.main(args=list(args), prog_name=f"flask {COMMAND_NAME}", obj=kbridge_app)

    return command
