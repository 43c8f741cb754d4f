"""The ``fed-agent`` command line: one entry point, commands discovered in fed_agent.commands."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

import fed_agent.commands as commands_pkg
from fed_agent.errors import is_user_error, one_line_message


class OneLineErrors(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, exit code 2, like every
    other user error of the command line (``--help`` prints the usage)."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and exit 2."""
        one_line = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {one_line} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every command module's sub-parser (each of them, and
    theirs, :class:`OneLineErrors` too: argparse makes sub-parsers of the parent's class)."""
    parser = OneLineErrors(
        prog="fed-agent",
        description="FedAgent: federated construction of AI agents with dynamic contracts.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit code.

    A user error (a bad path, file or setting: :func:`fed_agent.errors.is_user_error`) is
    printed as one line on stderr with exit code 2; any other exception is a bug and keeps
    its traceback.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"fed-agent {args.command}: {one_line_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
