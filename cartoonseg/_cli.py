"""The one error policy of every ``python -m cartoonseg`` command: expected failures (bad input, missing or corrupt
files, unavailable weights, unwritable outputs) print a single ``error: ...`` line and exit with status 2; anything
else is a bug and keeps its traceback. Application modules reuse it for their standalone ``main``, and
:func:`load_networks` for their ``--detector`` / ``--refiner`` options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ._optional import MissingDependencyError
from .checkpoint import CheckpointError, load_detector, load_refiner
from .hub import WeightsUnavailableError, resolve_weights

__all__ = ["CLI_ERRORS", "area_main", "load_networks", "run_parser", "subcommand_parser"]

#: exceptions reported as one line (OSError covers missing paths and unwritable ``--out`` folders;
#: MissingDependencyError names the extra to install)
CLI_ERRORS = (ValueError, TypeError, OSError, CheckpointError, WeightsUnavailableError, MissingDependencyError)


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


def area_main(add_parsers: Callable[[object], None], doc: str) -> Callable[[Sequence[str] | None], int]:
    """The stand-alone ``main(argv)`` of an application area (``python -m cartoonseg.<area> <command> ...``): the
    sub-commands that ``add_parsers`` registers, run under this module's error policy."""

    def main(argv: Sequence[str] | None = None) -> int:
        return run_parser(subcommand_parser(add_parsers, doc.strip().splitlines()[0]), argv)

    return main


def load_networks(detector: str, refiner: str | None, *, search_dirs: Sequence = (), allow_download: bool = True,
                  device: str = "cpu"):
    """The detector and refiner named on a command line (path, released name such as ``detector``; the refiner may be
    ``none`` or empty), resolved by :func:`cartoonseg.resolve_weights` and loaded.

    Returns:
        ``(RTMDetIns, ISNetDIS | None)``.
    """
    det = load_detector(resolve_weights(detector, search_dirs=search_dirs, allow_download=allow_download), device=device)
    ref = None
    if refiner and str(refiner).lower() != "none":
        ref = load_refiner(resolve_weights(refiner, search_dirs=search_dirs, allow_download=allow_download), device=device)
    return det, ref
