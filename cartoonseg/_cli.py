"""The one error policy of every ``python -m cartoonseg`` command: expected failures (bad input, missing or corrupt
files, unavailable weights, unwritable outputs) print a single ``error: ...`` line and exit with status 2; anything
else is a bug and keeps its traceback. Application modules reuse it for their standalone ``main``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .checkpoint import CheckpointError
from .hub import WeightsUnavailableError

__all__ = ["CLI_ERRORS", "run_parser", "subcommand_parser"]

#: exceptions reported as one line (OSError covers missing paths and unwritable ``--out`` folders)
CLI_ERRORS = (ValueError, TypeError, OSError, CheckpointError, WeightsUnavailableError)


def subcommand_parser(add_parsers: Callable[[object], None], description: str) -> argparse.ArgumentParser:
    """A ``python -m cartoonseg`` parser holding the sub-commands that ``add_parsers`` registers."""
    parser = argparse.ArgumentParser(prog="python -m cartoonseg", description=description)
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command's ``func``; expected failures -> one line and status 2."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLI_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
