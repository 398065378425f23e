"""Synthesise a COCO-format cartoon instance-segmentation dataset (arXiv 2312.01943, §3.2).

    python -m train.synthesize --fg DIR --bg DIR --out DIR --num N [--size 640] [--seed S] [--workers W]
                               [--person-boxes FILE] [--split train] [--preset code|paper]

Writes ``OUT/annotations/det_<split>.json`` (COCO, RLE masks) and ``OUT/<split>/<id:012d>.jpg``; the format is
documented in :mod:`cartoonseg.data.synthesis`. Rerunning the same command resumes an interrupted run.
``--num 98600`` reproduces the paper's dataset size. ``--out`` must be apart from ``--fg`` and ``--bg`` (not the
same folder, not inside them, not containing them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from cartoonseg._cli import seed as cli_seed
from cartoonseg.data.synthesis import PRESETS, synthesize_dataset

from ._cli import parser, script_main


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m train.synthesize``."""
    ap = parser("train.synthesize", __doc__)
    ap.add_argument("--fg", required=True,
                    help="foreground folder (RGBA images, or PNGs with a transparency colour key; optional meta.jsonl "
                         "with tags)")
    ap.add_argument("--bg", required=True, help="background image folder")
    ap.add_argument("--out", required=True, help="output dataset root")
    ap.add_argument("--num", type=int, required=True, help="number of images (98600 = the paper's size)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="code",
                    help="code: 640 canvas as the released code (default); paper: 720 canvas")
    ap.add_argument("--size", type=int, default=None,
                    help="canvas size in px, 64..4096; overrides the preset's (code 640, paper 720)")
    ap.add_argument("--split", default="train", help="split name: train (random JPEG quality) or val/test")
    ap.add_argument("--seed", type=cli_seed, default=0, help="random seed")
    ap.add_argument("--workers", type=int, default=1, help="worker processes")
    ap.add_argument("--person-boxes", default=None,
                    help="COCO person-box groups from train.coco_person_boxes (enables the personbbox layout)")
    ap.add_argument("--image-id-start", type=int, default=0, help="id of the first image")
    ap.add_argument("--overwrite", action="store_true",
                    help="discard a previous run with other settings, or write into a non-empty folder holding no "
                         "run (files there are kept, same-named ones replaced)")
    ap.add_argument("--no-progress", action="store_true",
                    help="no progress bar (it is shown only when stderr is a terminal)")
    return ap


def _run(args: argparse.Namespace) -> int:
    cfg = PRESETS[args.preset]
    changes = {"split": args.split}
    if args.size is not None:
        changes["size"] = args.size
    cfg = dataclasses.replace(cfg, **changes)
    result = synthesize_dataset(args.fg, args.bg, args.out, args.num, cfg, seed=args.seed, workers=args.workers,
                                person_boxes=args.person_boxes, image_id_start=args.image_id_start,
                                progress=not args.no_progress, overwrite=args.overwrite)
    print(json.dumps(result))
    return 0


#: ``python -m train.synthesize ...``: bad options and input are one "error:" line, status 2
main = script_main(build_parser, _run)


if __name__ == "__main__":
    raise SystemExit(main())
