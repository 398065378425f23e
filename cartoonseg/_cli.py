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

__all__ = ["CLI_ERRORS", "SkippedInputs", "area_main", "check_device", "load_networks", "run_parser",
           "subcommand_parser"]

#: exceptions reported as one line (OSError covers missing paths and unwritable ``--out`` folders;
#: MissingDependencyError names the extra to install)
CLI_ERRORS = (ValueError, TypeError, OSError, CheckpointError, WeightsUnavailableError, MissingDependencyError)


def subcommand_parser(add_parsers: Callable[[object], None], description: str) -> argparse.ArgumentParser:
    """A ``python -m cartoonseg`` parser holding the sub-commands that ``add_parsers`` registers."""
    parser = argparse.ArgumentParser(prog="python -m cartoonseg", description=description)
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


class SkippedInputs:
    """The batch policy of commands with many inputs: an input file that cannot be read is skipped with one
    ``warning:`` line and the others are processed; :meth:`finish` then raises (one ``error:`` line, status 2) so a
    script notices. Only reading is guarded: a failure while processing a readable input still stops the command.

    With a single input there is nothing to skip to: its read error is the one ``error:`` line.

    Example::

        skipped = SkippedInputs(len(inputs))
        for path in inputs:
            image = skipped.read(path, read_image)
            if image is None:
                continue
            ...
        skipped.finish()
    """

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.failed: list[str] = []

    def read(self, path, reader):
        """``reader(path)``, or None (after a warning on stderr) when it raises ``ValueError``/``OSError``."""
        try:
            return reader(path)
        except (ValueError, OSError) as exc:
            if self.total <= 1:
                raise
            print(f"warning: skipping {path}: {exc}", file=sys.stderr)
            self.failed.append(str(path))
            return None

    def finish(self) -> None:
        """Raise ``ValueError`` (one ``error:`` line, status 2) when any input was skipped."""
        if self.failed:
            shown = ", ".join(self.failed[:5]) + (" ..." if len(self.failed) > 5 else "")
            raise ValueError(f"{len(self.failed)} of {self.total} inputs could not be read and were skipped: {shown}")


def check_device(text: str) -> str:
    """Validate a ``--device`` value before anything loads: ``cpu``, ``cuda``/``cuda:N`` (only where CUDA and that
    GPU exist), ``mps`` (where available) or ``auto`` (for commands that offer it). Raises ``ValueError`` with the reason; returns ``text``."""
    import torch

    if str(text) == "auto":  # the command picks (CUDA when present, else CPU)
        return str(text)
    try:
        device = torch.device(str(text))
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {text!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"--device {text}: CUDA is not available here (torch {torch.__version__}, {build}); "
                             f"use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"--device {text}: Apple MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"--device {text}: only cpu, cuda[:N] and mps are supported")
    return str(text)


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command's ``func``; expected failures -> one line and status 2.
    A ``--device`` option is checked (:func:`check_device`) before the command starts."""
    args = parser.parse_args(argv)
    try:
        if getattr(args, "device", None) is not None:
            check_device(args.device)
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
