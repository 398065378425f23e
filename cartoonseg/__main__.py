"""Command line: ``python -m cartoonseg segment|convert|annotate|tag|depth|depth-pool|inpaint|inpaint-refine|kenburns|style|puppet``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._cli import (SkippedInputs, add_matting_option, check_matting, finish_parser, load_networks, matte_instances,
                   progress, quiet, run_parser)
from .checkpoint import convert
from .device import PRECISION_CHOICES
from .instance_files import write_instances
from .io import IMAGE_SUFFIXES, read_image
from .outputs import OutputFolder, add_overwrite_argument, unique_names
from .segmenter import PROMPT_MODES, Segmenter, check_settings


def _expand_inputs(items: Sequence[str]) -> list[Path]:
    """Image paths from files and folders (a folder gives its regular image files, sorted; FIFOs, devices and
    sub-folders there are skipped with a warning, never opened); the same file named twice is segmented once. A
    named path that is not a regular file stays in the list: checking it fails and it is skipped before the models
    load (see :class:`~cartoonseg._cli.SkippedInputs`)."""
    paths: list[Path] = []
    seen: set[str] = set()
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = []
            for q in sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES):
                if q.is_file():
                    found.append(q)
                else:
                    print(f"warning: skipping {q}: not a regular file", file=sys.stderr)
        elif p.exists():
            found = [p]
        else:
            raise ValueError(f"input not found: {p}")
        for q in found:
            key = os.path.realpath(q)
            if key not in seen:
                seen.add(key)
                paths.append(q)
    if not paths:
        raise ValueError("no input images")
    return paths


def _parse_boxes(specs: Sequence[str]):
    """``--box X1,Y1,X2,Y2`` options -> float tensor ``[N,4]`` (xyxy image pixels)."""
    import torch

    rows = []
    for spec in specs:
        try:
            vals = [float(v) for v in spec.replace(" ", "").split(",")]
        except ValueError:
            vals = []
        if len(vals) != 4 or not all(np.isfinite(vals)) or vals[2] <= vals[0] or vals[3] <= vals[1]:
            raise ValueError(f"--box must be X1,Y1,X2,Y2 with X2 > X1 and Y2 > Y1 (image pixels), got {spec!r}")
        rows.append(vals)
    return torch.tensor(rows, dtype=torch.float32)


def _segment(args: argparse.Namespace) -> int:
    inputs = _expand_inputs(args.images)
    names = unique_names(inputs)
    boxes = _parse_boxes(args.box) if args.box else None
    if boxes is not None and str(args.refiner).lower() in ("none", ""):
        raise ValueError("--box prompts are refined by the refiner; do not pass --refiner none")
    check_matting(args)  # a missing extra fails now, not after the models load and an image is segmented
    check_settings(det_size=args.det_size, score_thr=args.score_thr, mask_thr=args.mask_thr,
                   max_instances=args.max_instances)  # before the output folder is made and the weights load
    skipped = SkippedInputs(len(inputs))
    # every input's header now, and the first image decoded: an unreadable, animated or (alone) truncated input is
    # skipped or fails in a moment, not after the weights load; with none usable nothing is made or loaded
    skipped.check(inputs, read_image)
    with OutputFolder(args.out, inputs=inputs, overwrite=args.overwrite) as out:  # checked before any model loads
        search = [Path(args.weights_dir)] if args.weights_dir else []
        detector, refiner = load_networks(args.detector, args.refiner, search_dirs=search,
                                          allow_download=not args.no_download, device=args.device)
        seg = Segmenter(
            detector,
            refiner,
            det_size=args.det_size,
            score_thr=args.score_thr,
            mask_thr=args.mask_thr,
            max_instances=args.max_instances,
            precision=args.precision,
            fuse=not args.exact,
            channels_last=not args.exact,
            prompt_mode=args.prompt_mode,
            grey=args.grey,
        )
        with progress(len(inputs), "images", quiet(args), unit="image") as images, \
                progress(None, "instances", quiet(args), unit="instance", leave=False) as refined:

            def per_instance(done: int, total: int) -> None:  # the refiner's progress within the current image
                if refined.total != total:
                    refined.reset(total=total)
                refined.update(done - refined.n)

            for path, name in zip(inputs, names):
                image = skipped.read(path, read_image)
                if image is None:
                    images.update(1)
                    continue
                start = time.perf_counter()
                if boxes is None:
                    instances = seg(image, progress=per_instance)
                else:
                    instances = seg.refine(image, boxes, progress=per_instance)
                instances = matte_instances(args, image, instances, name=str(path))
                elapsed = time.perf_counter() - start
                with out.result_dir(name) as result:
                    write_instances(instances, image, result.path, source=path)
                images.write(f"{path}: {len(instances)} instances in {elapsed:.2f}s -> {out.path / name}")
                images.update(1)
    skipped.finish()
    return 0


def _convert(args: argparse.Namespace) -> int:
    kind, dst = convert(args.src, args.dst, overwrite=args.overwrite)
    print(f"converted {kind} {args.src} -> {dst}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cartoonseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="segment images into character instances")
    seg.add_argument("images", nargs="+", help="image files or folders")
    seg.add_argument("--detector", default="detector",
                     help="detector weights: a path, or 'detector' = the released rtmdetl_e60.ckpt (downloaded into "
                          "--weights-dir or ~/.cache/cartoonseg when missing)")
    seg.add_argument("--refiner", default="refiner",
                     help="refiner weights: a path, 'refiner' = the released refine_last.ckpt, or 'none' (detector "
                          "masks only)")
    seg.add_argument("--out", required=True,
                     help="output folder, new or written by cartoonseg (one sub-folder per image: overlay.png, "
                          "mask_NNN.png, instances.json; named after the image, with a path hash when stems repeat)")
    seg.add_argument("--score-thr", type=float, default=0.3, help="minimum detection score, 0..1")
    seg.add_argument("--mask-thr", type=float, default=None,
                     help="mask probability above which a pixel belongs to the instance, 0..1 (default: the "
                          "refiner's, 0.3; with --refiner none the detector's 0.5 unless given)")
    seg.add_argument("--det-size", type=int, default=640,
                     help="detector input size in pixels (longest side; a multiple of 32)")
    seg.add_argument("--max-instances", type=int, default=100, help="keep at most this many instances per image")
    seg.add_argument("--precision", choices=list(PRECISION_CHOICES), default="fp32",
                     help="compute precision. auto = the fastest this device runs natively; a precision "
                          "the device lacks (bf16 on an AVX2-only CPU) falls back to fp32 with a warning")
    seg.add_argument("--exact", action="store_true",
                     help="run the original implementation's op order (bit-identical, about 2x slower on CPU) "
                          "instead of the fast path (BatchNorm folded, channels-last)")
    seg.add_argument("--grey", action="store_true",
                     help="convert images to grey (and back to 3 channels) before segmenting: manga pages, line art")
    add_matting_option(seg, "writes them (alpha_NNN.png) and RGBA cut-outs (cutout_NNN.png)")
    seg.add_argument("--box", action="append", metavar="X1,Y1,X2,Y2",
                     help="segment the character in this box instead of detecting (repeatable; same boxes for every "
                          "image); see --prompt-mode")
    seg.add_argument("--prompt-mode", choices=list(PROMPT_MODES), default="kernel",
                     help="how a --box becomes the refiner's coarse mask: kernel = the mask of the detection that "
                          "best overlaps the box (the original's segment_with_bboxes; default), rectangle = the "
                          "filled box")
    seg.add_argument("--device", default="cpu",
                     help="torch device to run on: cpu, cuda, cuda:1, mps, or auto (CUDA when present)")
    seg.add_argument("--weights-dir", default=None,
                     help="folder holding the released files (searched first; downloads go there; default: "
                          "~/.cache/cartoonseg)")
    seg.add_argument("--no-download", action="store_true", help="never download weights")
    add_overwrite_argument(seg)
    seg.set_defaults(func=_segment)
    conv = sub.add_parser("convert", help="convert a released/mmdet/Lightning checkpoint to cartoonseg safetensors")
    conv.add_argument("src", help="the weights file to convert: rtmdetl_e60.ckpt / refine_last.ckpt, an mmdet or "
                                  "Lightning checkpoint, or our .safetensors")
    conv.add_argument("dst", help="the .safetensors file to write, readable by everyone (mode 0644 under umask 022); "
                                  "never the source; an existing file only if cartoonseg wrote it, or with --overwrite")
    add_overwrite_argument(conv)
    conv.set_defaults(func=_convert)
    # Application commands live next to their code and register themselves here (imported lazily inside).
    from .annotate.cli import add_parsers as add_annotate_parsers
    from .depth.cli import add_parsers as add_depth_parsers
    from .inpaint.cli import add_parsers as add_inpaint_parsers
    from .kenburns.cli import add_parsers as add_kenburns_parsers
    from .puppet.cli import add_parsers as add_puppet_parsers
    from .style.cli import add_parsers as add_style_parsers
    from .tagger.cli import add_parsers as add_tag_parsers

    add_annotate_parsers(sub)
    add_inpaint_parsers(sub)
    add_depth_parsers(sub)
    add_kenburns_parsers(sub)
    add_puppet_parsers(sub)
    add_style_parsers(sub)
    add_tag_parsers(sub)
    return finish_parser(parser)


def main(argv: Sequence[str] | None = None) -> int:
    return run_parser(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
