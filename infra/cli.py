"""The `groupbuy` command; each later service and operator command adds a subcommand here."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="groupbuy",
        description="Event-sourced group buying: many sites, one campaign, one falling price.",
    )
    root.add_argument("--version", action="version", version=f"groupbuy {version('groupbuy')}")
    root.add_subparsers(dest="command", metavar="COMMAND")
    return root


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if arguments.command is None:
        parser().print_help(sys.stderr)
        return 2
    return 0
