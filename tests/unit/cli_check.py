"""Check a command line against a click CLI without running it: every subcommand and option must exist.

Shared by test_docs (commands in the docs) and test_docker (commands in compose.yaml).
"""

from __future__ import annotations

import warnings
from typing import Any

import click


def parse(group: click.Group, argv: list[str], obj: Any = None) -> list[str]:
    """The subcommand path argv names, e.g. ["dlq", "replay"]; raises click.UsageError if it is wrong.

    Only parsing happens: no callback runs, so no app is imported and nothing connects.
    """
    try:
        ctx = group.make_context(group.name or "cli", list(argv), obj=obj)
        path: list[str] = []
        command: click.Command = group
        while isinstance(command, click.Group):
            with warnings.catch_warnings():  # click 8.2 deprecates protected_args; it is still the way in
                warnings.simplefilter("ignore", DeprecationWarning)
                rest = [*ctx.protected_args, *ctx.args]
            if not rest:
                break
            name, sub, rest = command.resolve_command(ctx, rest)
            if name is None or sub is None:
                raise click.UsageError(f"no such command in {rest!r}")
            ctx = sub.make_context(name, rest, parent=ctx, obj=obj)
            path.append(name)
            command = sub
        return path
    except click.exceptions.Exit as done:  # --help or --version: valid, and finished
        if done.exit_code:
            raise click.UsageError(f"{argv!r} exited with {done.exit_code}") from None
        return []
