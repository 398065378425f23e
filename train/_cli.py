"""Command-line pieces shared by the ``train/`` scripts: their parser (:func:`parser`, ``--help`` showing every
default), their ``main`` (:func:`script_main`), the range check of option values (:func:`check_option`, one
``error:`` line naming the option and what is allowed, before anything is built) and, for the two training scripts (``train.train_detector``,
``train.train_refiner``), the data/output arguments, the run-control arguments (device, AMP, workers, seed,
logging, checkpoints, resume) and their mapping onto the fields both ``cartoonseg.training`` configs have."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from cartoonseg._cli import CLI_ERRORS, HelpFormatter, check_device_up_front, handle_stop, run_parser
from cartoonseg._cli import seed as cli_seed
from cartoonseg.training.coco import CHECK_IMAGES_MODES, find_annotation


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The parser of a ``train/`` script: ``python -m <prog>``, the first line of its docstring, and the ``--help``
    of every cartoonseg command (:class:`cartoonseg._cli.HelpFormatter`: each option states its default)."""
    return argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.strip().splitlines()[0],
                                   formatter_class=HelpFormatter)


def script_main(build_parser: Callable[[], argparse.ArgumentParser],
                run: Callable[[argparse.Namespace], int]) -> Callable[[list[str] | None], int]:
    """The ``main(argv)`` of a ``train/`` script: its parser, then ``run(args)`` under the error policy of every
    cartoonseg command (:func:`cartoonseg._cli.run_parser`: bad options and input are one ``error:`` line and
    status 2, Ctrl-C is ``interrupted`` and 130)."""

    def main(argv: list[str] | None = None) -> int:
        ap = build_parser()
        ap.set_defaults(func=run)
        return run_parser(ap, argv)

    return main


def check_option(option: str, value: float | None, low: float | None = None, high: float | None = None, *,
                 above: bool = False) -> None:
    """Raise ``ValueError`` naming ``option`` and the allowed range unless ``value`` is a finite number
    ``>= low`` (``> low`` with ``above``) and ``<= high``; None (an option not given) passes."""
    if value is None:
        return
    if low is not None and high is not None:
        allowed = f"in {'(' if above else '['}{low}, {high}]"
    elif low is not None:
        allowed = f"{'>' if above else '>='} {low}"
    else:
        allowed = f"<= {high}"
    ok = math.isfinite(value) and (low is None or (value > low if above else value >= low)) and (
        high is None or value <= high)
    if not ok:
        raise ValueError(f"{option} must be {'' if math.isfinite(value) else 'a finite number '}{allowed}, got {value}")


def add_data_args(ap: argparse.ArgumentParser, out_help: str) -> None:
    """``--data``, ``--out``, ``--images``, ``--split``, ``--check-images`` (``--no-check-images``)."""
    ap.add_argument("--data", required=True, help="COCO JSON or dataset folder with annotations/")
    ap.add_argument("--out", required=True, help=out_help)
    ap.add_argument("--images", default=None, help="image folder (default: found next to the JSON)")
    ap.add_argument("--split", default="train", help="split name used to find the JSON in DIR/annotations")
    ap.add_argument("--check-images", choices=list(CHECK_IMAGES_MODES), default="fast",
                    help="before training, check every image once: fast = headers and file ends (a few seconds per "
                         "10k images; finds empty, cut-short and wrong-size files), full = also decode each image "
                         "once (a few ms an image, shared by the torchrun processes; also finds damaged data inside "
                         "PNG/WebP files), none = no check "
                         "(a corrupt file then stops the run only when first sampled)")
    ap.add_argument("--no-check-images", action="store_const", const="none", dest="check_images",
                    help="the same as --check-images none")


def add_run_args(ap: argparse.ArgumentParser, *, max_iters_help: str, resume_help: str) -> None:
    """``--amp``, ``--device``, ``--workers``, ``--seed``, ``--log-interval``, ``--ckpt-interval``,
    ``--max-iters``, ``--no-resume``, ``--allow-changes``."""
    ap.add_argument("--amp", default="auto", choices=["auto", "none", "fp16", "bf16"],
                    help="mixed precision: auto = bf16 or fp16 on CUDA, fp32 on a CPU; bf16 on a CPU needs its bf16 "
                         "kernels (AVX-512; fast with AVX512-BF16/AMX)")
    # dest run_device: the shared CLI policy does not check it up front (cartoonseg._cli.run_parser), because whether
    # CUDA is here is each node's verdict, which under torchrun must reach every rank (check_run_args)
    ap.add_argument("--device", dest="run_device", metavar="DEVICE", default="auto",
                    help="auto, cpu, cuda or cuda:N (torchrun: cuda:LOCAL_RANK)")
    ap.add_argument("--workers", type=int, default=4, help="DataLoader workers per process, >= 0")
    ap.add_argument("--seed", type=cli_seed, default=0, help="seed")
    ap.add_argument("--log-interval", type=int, default=50, help="iterations between log lines, >= 1")
    ap.add_argument("--ckpt-interval", type=int, default=0,
                    help="iterations between checkpoints, >= 0 (0: at epoch ends only)")
    ap.add_argument("--max-iters", type=int, default=None, help=max_iters_help)
    ap.add_argument("--no-resume", action="store_true", help=resume_help)
    ap.add_argument("--allow-changes", action="store_true",
                    help="resume even when settings differ from the checkpoint's (otherwise refused, listing them)")


def check_run_args(args: argparse.Namespace) -> None:
    """Range-check the arguments of :func:`add_run_args` before any data or model is built; raises ``ValueError``
    naming the option. ``--device``: :func:`cartoonseg._cli.check_device_up_front`, under torchrun its spelling only
    (whether this node has CUDA, and enough GPUs, is checked by ``training.distributed.setup``, which shares every
    rank's verdict before the process group starts: a refusal here ended this rank alone and left the others in
    ``init_process_group`` until its time-out)."""
    # only checked: "auto"/"cuda" keep their torchrun meaning in the configs
    device = check_device_up_front(args.run_device, per_rank=True)
    if not device.startswith(("auto", "cpu", "cuda")):
        raise ValueError(f"--device {args.run_device}: training runs on auto, cpu, cuda or cuda:N")
    check_option("--workers", args.workers, 0)
    check_option("--log-interval", args.log_interval, 1)
    check_option("--ckpt-interval", args.ckpt_interval, 0)
    check_option("--max-iters", args.max_iters, 0)


def common_config(args: argparse.Namespace, *, resolve_data: bool = True) -> dict[str, Any]:
    """Config keyword arguments both training configs share, from the parsed arguments above (range-checked
    first, :func:`check_run_args`). ``train_ann`` is ``--data``'s COCO JSON (:func:`find_annotation`), or with
    ``resolve_data=False`` ``--data`` as given, for :func:`train_in_group` to resolve."""
    check_run_args(args)
    return {
        "train_ann": str(find_annotation(args.data, args.split)) if resolve_data else str(args.data),
        "out_dir": args.out,
        "image_root": args.images,
        "amp": args.amp,
        "num_workers": args.workers,
        "seed": args.seed,
        "log_interval": args.log_interval,
        "ckpt_interval": args.ckpt_interval,
        "max_iters": args.max_iters,
        "resume": not args.no_resume,
        "allow_changes": args.allow_changes,
        "device": args.run_device,
        "check_images": args.check_images,
    }


def train_in_group(make_config: Callable[[bool], Any], args: argparse.Namespace,
                   train: Callable[[Any, Any], dict]) -> dict:
    """``train(cfg, ctx)`` for the config ``make_config(resolve_data)`` of a command line, in the order that leaves
    no ``torchrun`` rank waiting for another: the options are checked (``make_config(False)``: the same verdict on
    every rank, before any process group), the process group starts
    (:func:`cartoonseg.training.distributed.setup`), and only then does every rank resolve ``--data``
    (:func:`find_annotation`) itself, through :func:`cartoonseg.sharding.every_rank`: on per-node storage a rank
    whose copy is missing ends every rank at once with one ``error: rank N: ...`` line, where it used to fail
    before the group started and leave the others in ``init_process_group`` until its time-out (30 minutes and
    more). Every rank must then read the same annotations (:func:`check_same_annotations`). The group is closed at
    the end."""
    import dataclasses

    from cartoonseg.sharding import every_rank
    from cartoonseg.training.distributed import cleanup, setup

    cfg = make_config(False)
    ctx = setup(cfg.device)
    try:
        ann = every_rank(lambda: find_annotation(args.data, args.split), ctx)
        check_same_annotations(ann, ctx)
        return train(dataclasses.replace(cfg, train_ann=str(ann)), ctx)
    finally:
        cleanup(ctx)


def check_same_annotations(ann, rank, option: str = "--data") -> None:
    """Under ``torchrun``: raise on every rank (``rank N: ...``, :func:`cartoonseg.sharding.every_rank`) when the
    annotation file ``ann`` (given as ``option``) of some rank is not byte for byte rank 0's; ``rank``: a
    ``RankInfo`` or ``DistContext``. Each rank works on its share of its own copy: in the trainers copies of
    different lengths (a node with an older or cut-down copy) gave the ranks different step counts and their
    collectives then crossed (gloo aborted with "Is there a distributed collective mismatch", NCCL can hang), and
    same-length copies trained on different data without a word; in ``train.evaluate`` and
    ``train.dump_predictions`` (rank 0's image list) a rank whose copy lacked an image died with a ``KeyError``
    while rank 0 waited for its shards for ever."""
    if rank.world_size <= 1:
        return
    from cartoonseg.hub import sha256_of
    from cartoonseg.sharding import agree, every_rank

    digest = every_rank(lambda: sha256_of(ann), rank)
    first = agree(digest)

    def check() -> None:
        if digest != first:
            raise ValueError(f"{option} {ann} differs from rank 0's copy (sha256 {digest[:12]}... vs "
                             f"{first[:12]}...): every process must read the same annotations; copy rank 0's to "
                             "every node")

    every_rank(check, rank)


def print_summary(summary: dict) -> None:
    """Rank 0 prints the run summary as one JSON line."""
    if summary.get("rank", 0) == 0:
        print(json.dumps({"summary": summary}, default=str))


def run_training(train: Callable[[], dict]) -> int:
    """Run ``train()`` (config from the command line, then training) under the error policy of every cartoonseg
    command (:mod:`cartoonseg._cli`): expected failures (bad settings, a refused ``--out``, an unwritable folder)
    print one ``error: ...`` line and return 2; otherwise rank 0 prints the summary and 0 is returned."""
    try:
        summary = train()
    except (KeyboardInterrupt, BrokenPipeError) as exc:
        return handle_stop(exc)  # Ctrl-C: one line, status 130; the last checkpoint resumes the run
    except CLI_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0
