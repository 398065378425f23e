"""The one error policy of every ``python -m cartoonseg`` command: expected failures (bad input, missing or corrupt
files, unavailable weights, unwritable outputs) print a single ``error: ...`` line and exit with status 2; Ctrl-C
prints ``interrupted`` and exits with 130 (what was finished stays, under the output policy, for the rerun); a closed
stdout (``| head``) ends the command quietly with 141 (128 + SIGPIPE, what the shell reports when a tool dies of
it); anything else is a bug and keeps its traceback. Application modules reuse it for their standalone ``main``, and
:func:`load_networks` for their ``--detector`` / ``--refiner`` options."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ._optional import MissingDependencyError
from .checkpoint import CheckpointError, load_detector, load_refiner
from .hub import WeightsUnavailableError, resolve_all
from .sharding import RankFailedError

__all__ = ["CLI_ERRORS", "EXIT_INTERRUPTED", "EXIT_PIPE", "TAG_LIST_HELP", "HelpFormatter", "SkippedInputs", "area_main",
           "add_matting_option", "add_rank_device_option", "check_device", "check_device_up_front", "check_matting",
           "device_name", "finish_parser", "handle_stop",
           "load_networks", "matte_instances", "progress", "quiet", "rank_device", "run_parser", "seed",
           "subcommand_parser"]

#: exceptions reported as one line (OSError covers missing paths and unwritable ``--out`` folders;
#: MissingDependencyError names the extra to install; RankFailedError repeats another rank's error, whose own
#: output is where a traceback belongs)
CLI_ERRORS = (ValueError, TypeError, OSError, CheckpointError, WeightsUnavailableError, MissingDependencyError,
              RankFailedError)
#: exit status after Ctrl-C (128 + SIGINT) and after the reader of stdout went away (128 + SIGPIPE)
EXIT_INTERRUPTED, EXIT_PIPE = 130, 141


#: what ``--matting`` computes, shared by every command that has the option (its effect is each command's own)
MATTING_HELP = ("alpha mattes per instance (fractional alpha at hair and soft edges, consistent where instances "
                "overlap; needs: pip install 'cartoonseg[matting]')")

#: how an option that takes a list of tags reads it (cartoonseg.tags.parse_tag_list), for its --help
TAG_LIST_HELP = "commas or newlines between tags, \\, a comma inside a tag"


def add_matting_option(parser: argparse.ArgumentParser, effect: str) -> None:
    """Register ``--matting`` (``effect``: what the command does with the mattes)."""
    parser.add_argument("--matting", action="store_true", help=f"compute {MATTING_HELP}; {effect}")


def check_matting(args: argparse.Namespace) -> None:
    """With ``--matting``, fail now (one line naming the extra) when pymatting is missing, before models load."""
    if getattr(args, "matting", False):
        from .matting import check_available

        check_available()


def matte_instances(args: argparse.Namespace, image, instances, name: str | None = None):
    """``instances`` with alpha mattes (:func:`cartoonseg.matting.instance_alphas`) under ``--matting``, else as
    they are (also when there are none). ``name``: the input's name in the matting's warnings (an instance that
    keeps its soft mask)."""
    if not getattr(args, "matting", False) or instances is None or not len(instances):
        return instances
    from .matting import instance_alphas

    return instance_alphas(image, instances, name=name)


def handle_stop(exc: BaseException) -> int:
    """The exit status for a command stopped by ``exc``: Ctrl-C (``KeyboardInterrupt``) prints one ``interrupted``
    line; a closed stdout (``BrokenPipeError``) prints nothing and points stdout at ``/dev/null`` so the interpreter's
    last flush does not fail again. Other exceptions are re-raised."""
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured)
            pass
        return EXIT_PIPE
    raise exc


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` of every command: each option's help ends with its default (``(default: 0.3)``) unless the help
    already says what happens without the option; options whose default is None or False say so in their help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown_default = default is not None and default is not False and default is not argparse.SUPPRESS  # 0 is shown
        if (action.option_strings and shown_default and "default" not in text
                and not isinstance(action, argparse._HelpAction)):
            shown = ", ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            text += f" (default: {shown if shown != '' else 'empty'})"
        return text


def seed(text: str) -> int:
    """The ``type`` of every ``--seed`` option: an integer in [0, 2**63) (numpy's and torch's generators take
    these; a negative seed used to fail deep inside, after the models had loaded)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {value}")
    return value


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]


def finish_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The conventions every ``python -m cartoonseg`` command shares, applied once to the whole parser tree: option
    defaults shown in ``--help`` (:class:`HelpFormatter`), and ``-q/--quiet`` (no progress bars; they are also off
    when stderr is not a terminal)."""
    commands = _subparsers(parser) or [parser]  # a stand-alone parser without sub-commands is the command
    for p in [parser, *commands]:
        p.formatter_class = HelpFormatter
        if p in commands and not any("--quiet" in a.option_strings for a in p._actions):
            p.add_argument("-q", "--quiet", action="store_true",
                           help="no progress bars (they are off anyway when stderr is not a terminal)")
    return parser


def subcommand_parser(add_parsers: Callable[[object], None], description: str) -> argparse.ArgumentParser:
    """A ``python -m cartoonseg`` parser holding the sub-commands that ``add_parsers`` registers."""
    parser = argparse.ArgumentParser(prog="python -m cartoonseg", description=description)
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return finish_parser(parser)


def progress(total: int | None = None, desc: str = "", quiet: bool = False, *, unit: str = "it", leave: bool = True):
    """A tqdm progress bar on stderr for long CLI work; silent with ``--quiet`` or when stderr is not a terminal.
    Use as a context manager; ``bar.update(n)``. ``total=None`` counts without an end (iterations of unknown number).
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=desc or None, unit=unit, leave=leave, dynamic_ncols=True, file=sys.stderr,
                disable=bool(quiet) or not sys.stderr.isatty())


def quiet_library_bars() -> None:
    """Turn off the model-loading progress bars of huggingface_hub and transformers (and, through
    :func:`cartoonseg._diffusers.follow_hub_progress_setting`, diffusers): ``-q`` and a non-terminal stderr silence
    every bar, not only cartoonseg's own."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub and by transformers when imported
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        hub.disable_progress_bars()
    for name in ("transformers.utils.logging", "diffusers.utils.logging"):
        module = sys.modules.get(name)
        if module is not None:
            module.disable_progress_bar()


def quiet(args: argparse.Namespace) -> bool:
    """Whether a command was asked for no progress output (``-q/--quiet``)."""
    return bool(getattr(args, "quiet", False))


class SkippedInputs:
    """The batch policy of commands with many inputs: an input file that cannot be read is skipped with one
    ``warning:`` line and the others are processed; :meth:`finish` then raises (one ``error:`` line, status 2) so a
    script notices. Only reading is guarded: a failure while processing a readable input still stops the command.

    With a single input there is nothing to skip to: its read error is the one ``error:`` line.

    :meth:`check`, before any model loads, applies this policy at once: every input's header is checked (cheap), the
    first good input is decoded (kept for its :meth:`read`), and with no usable input the command fails there,
    not after the weights load (seconds to minutes, or a download).

    Example::

        skipped = SkippedInputs(len(inputs))
        skipped.check(inputs, read_image)  # before the networks load
        load_networks(...)
        for path in inputs:
            image = skipped.read(path, read_image)  # None for an input skipped (by check or now)
            if image is None:
                continue
            ...
        skipped.finish()
    """

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.failed: list[str] = []
        self._read: dict[str, object] = {}

    def check(self, paths, reader) -> None:
        """Before the slow steps: check every path's header (:func:`cartoonseg.io.check_image_file`, no decoding),
        skipping those that fail with :meth:`read`'s warning, then decode the first that passes with ``reader``
        (a truncated file shows only then; on failure the next one), keeping the result for :meth:`read`. Raises
        as :meth:`finish` when no input is usable, and with a single input its error."""
        from .io import check_image_file

        usable = [p for p in paths if self.read(p, check_image_file) is not None]
        for path in usable:
            result = self.read(path, reader)
            if result is not None:
                self._read[str(path)] = result
                return
        self.finish()

    def read(self, path, reader):
        """``reader(path)``, or None (after a warning on stderr) when it raises ``ValueError``/``OSError``; None
        without a second warning for a path already skipped, and the result :meth:`check` read for its path."""
        key = str(path)
        if key in self._read:
            return self._read.pop(key)
        if key in self.failed:
            return None
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


def device_name(text: str, *, what: str = "--device") -> str:
    """``text`` as a device name of the kinds cartoonseg runs on (``cpu``, ``cuda``/``cuda:N``, ``mps``; ``auto``
    stays ``auto``), without asking whether this machine has it; ``ValueError`` naming ``what`` otherwise. The part of
    :func:`check_device` that is the same verdict on every node (what a command checks up front under ``torchrun``,
    :func:`check_device_up_front`)."""
    import torch

    if str(text) == "auto":
        return "auto"
    try:
        device = torch.device(str(text))
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{what} {text!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{what} {text}: only cpu, cuda[:N] and mps are supported")
    return str(text)


def check_device(text: str, *, what: str = "--device") -> str:
    """Validate a ``--device`` value before anything loads: ``cpu``, ``cuda``/``cuda:N`` (only where CUDA and that
    GPU exist), ``mps`` (where available) or ``auto``. Raises ``ValueError`` with the reason (naming ``what``: the
    option, or the node input); returns the device to use (``auto`` becomes ``cuda`` when CUDA is present, else
    ``cpu``; :func:`rank_device` then maps ``cuda`` to a process's GPU). The nodes' device widgets use it too."""
    import torch

    if device_name(text, what=what) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(str(text))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"{what} {text}: CUDA is not available here (torch {torch.__version__}, {build}); "
                             f"use {what} cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{what} {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"{what} {text}: Apple MPS is not available here; use {what} cpu")
    return str(text)


#: the parser default that marks a command whose ranks check their own ``--device`` (:func:`add_rank_device_option`)
_DEVICE_PER_RANK = "_device_checked_per_rank"


def add_rank_device_option(parser: argparse.ArgumentParser, *, default: str, help: str) -> None:
    """``--device`` of a command whose ``torchrun`` ranks start their process group before they load anything
    (annotate, ``train.evaluate``, ``train.dump_predictions``): each rank maps it to its own device
    (:func:`rank_device`) inside :func:`cartoonseg.sharding.every_rank`, so a node without CUDA (or with too few
    GPUs) ends every rank with one ``error: rank N: ...`` line. :func:`run_parser` then checks only its spelling up
    front under ``torchrun`` (:func:`check_device_up_front`): a refusal there ended that rank alone and left the
    others in ``init_process_group`` until its time-out."""
    parser.add_argument("--device", default=default, help=help)
    parser.set_defaults(**{_DEVICE_PER_RANK: True})


def check_device_up_front(text: str, *, per_rank: bool, what: str = "--device") -> str:
    """A ``--device`` value checked before a command starts: :func:`check_device` in one process (and for a command
    that checks nothing later); under ``torchrun`` (``WORLD_SIZE`` > 1) with ``per_rank`` (a command that checks
    each rank's device after its process group starts and shares the verdict: :func:`add_rank_device_option`, the
    trainers' ``distributed.setup``) only the spelling (:func:`device_name`; ``auto`` stays ``auto``), because
    whether this node has that device is each node's verdict, which must reach every rank."""
    from .sharding import RankInfo

    if per_rank and RankInfo.from_env().world_size > 1:
        return device_name(text, what=what)
    return check_device(text, what=what)


def rank_device(text: str, local_rank: int, *, per_process: bool = False, what: str = "--device") -> str:
    """The device of one process of a (possibly ``torchrun``) run for a ``--device`` value: checked by
    :func:`check_device` (``auto`` becomes ``cuda`` or ``cpu``), then ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU
    per process on a node; ``LOCAL_RANK`` is 0 without torchrun). With ``per_process`` (the trainers under torchrun)
    an explicit ``cuda:N`` becomes ``cuda:LOCAL_RANK`` too. Raises ``ValueError`` naming ``what`` and the GPU count
    when this node has fewer GPUs than that (more processes per node than GPUs), instead of a CUDA error when the
    models load. The one home of this rule: annotate, ``train.evaluate``, ``train.dump_predictions`` and the
    trainers' :func:`cartoonseg.training.distributed.setup` use it."""
    device = check_device(text, what=what)
    if device != "cuda" and not (per_process and device.startswith("cuda")):
        return device
    import torch

    count = torch.cuda.device_count()
    if not 0 <= local_rank < count:
        raise ValueError(f"{what} {text}: process LOCAL_RANK={local_rank} would use GPU {local_rank} but this machine "
                         f"has {count}; start at most that many processes per node (torchrun --nproc-per-node)")
    return f"cuda:{local_rank}"


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command's ``func``; expected failures -> one line and status 2.
    A ``--device`` option is checked before the command starts (:func:`check_device_up_front`: under ``torchrun``
    only its spelling for a command that checks each rank's device itself, :func:`add_rank_device_option`)."""
    args = parser.parse_args(argv)
    if quiet(args) or not sys.stderr.isatty():
        quiet_library_bars()
    try:
        if getattr(args, "device", None) is not None:
            args.device = check_device_up_front(args.device, per_rank=getattr(args, _DEVICE_PER_RANK, False))
        return args.func(args)
    except (KeyboardInterrupt, BrokenPipeError) as exc:
        return handle_stop(exc)
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
    kwargs = {"search_dirs": search_dirs, "allow_download": allow_download}
    names = [detector] + ([refiner] if refiner and str(refiner).lower() != "none" else [])
    paths = resolve_all([(name, kwargs) for name in names])  # every missing file named at once
    det = load_detector(paths[0], device=device)
    ref = load_refiner(paths[1], device=device) if len(paths) > 1 else None
    return det, ref
