"""`python manage.py kbridge <command> [args]`: the kbridge CLI, run with the project's KBridge app.

Every kbridge subcommand works (listen, info, flow, worker, dlq replay, ...): the
arguments after `kbridge` go to kbridge's click CLI untouched, with the app passed
as click's root object, so no --app is needed and `--help` is kbridge's own.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from kbridge.cli import main

from ...registry import get_app

# Already applied by manage.py before this command runs; kbridge's CLI does not know them.
DJANGO_GLOBAL_OPTIONS = ("--settings", "--pythonpath")


class Command(BaseCommand):
    help = (
        "Run a kbridge command with this project's KBridge app (built from settings.KBRIDGE), "
        "e.g. `manage.py kbridge listen`, `manage.py kbridge info`. `manage.py kbridge --help` lists them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS]...")

    def run_from_argv(self, argv: list[str]) -> None:
        """From manage.py: click parses the arguments and exits with kbridge's own exit codes."""
        prog_name = f"{os.path.basename(argv[0])} {argv[1]}"
        try:
            main.main(args=without_django_options(argv[2:]), prog_name=prog_name, obj=get_app())
        finally:
            connections.close_all()

    def handle(self, *args: str, **options: Any) -> None:
        """From call_command("kbridge", "info"): kbridge's errors become CommandError."""
        try:
            main.main(args=list(args), prog_name="kbridge", obj=get_app(), standalone_mode=False)
        except click.ClickException as exc:
            raise CommandError(exc.format_message()) from exc

    def print_help(self, prog_name: str, subcommand: str) -> None:
        """`manage.py help kbridge` shows kbridge's commands rather than an empty argparse usage."""
        try:
            main.main(args=["--help"], prog_name=f"{os.path.basename(prog_name)} {subcommand}", obj=get_app())
        except SystemExit:
            pass


def without_django_options(args: list[str]) -> list[str]:
    """args minus --settings/--pythonpath (`--opt value` or `--opt=value`), which manage.py has already used."""
    out: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
        elif arg in DJANGO_GLOBAL_OPTIONS:
            skip_value = True
        elif not arg.startswith(tuple(f"{o}=" for o in DJANGO_GLOBAL_OPTIONS)):
            out.append(arg)
    return out
