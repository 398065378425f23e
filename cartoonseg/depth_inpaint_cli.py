"""Command-line tools for depth, instance depth pooling and background inpainting.

Paper: arXiv 2312.01943 §6.1 (3D Ken Burns: initial depth, per-instance depth layers, PatchMatch + diffusion
inpainting of the background). Sub-commands of ``python -m cartoonseg`` (registered by :func:`add_parsers`),
also runnable as ``python -m cartoonseg.depth_inpaint_cli ...``:

* ``inpaint IMAGE MASK --out OUT.png [--method patchmatch|telea] [--patch-size 3] [--seed S]`` (mask: white = fill)
* ``depth IMAGE --model DIR|small|base|large --out DEPTH.png [--bits 8|16]`` (grey, larger = nearer)
* ``depth-pool DEPTH.png --masks MASK.png... --mode mean|median|feet --out OUT.png [--blend B] [--json V.json]``
* ``inpaint-refine IMAGE MASK --model SD --out OUT.png [--config-dir DIR] [--tags "..."] [--steps 32] ...``
  (diffusion refinement through ``diffusers``, local files only)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from ._cli import run_parser, subcommand_parser
from . import outputs
from .io import read_depth, read_image, read_mask, to_float_image, write_grey, write_image

__all__ = ["add_parsers", "build_parser", "main"]


def _run_inpaint(args: argparse.Namespace) -> int:
    from .inpaint import inpaint

    inputs = [args.image, args.mask]
    outputs.check_file(args.out, inputs=inputs, overwrite=args.overwrite)
    image = read_image(args.image)
    mask = read_mask(args.mask, image.shape[:2])
    start = time.perf_counter()
    out = inpaint(image, mask, method=args.method, patch_size=args.patch_size, seed=args.seed, radius=args.radius)
    outputs.write(args.out, write_image, out, inputs=inputs, overwrite=args.overwrite)
    print(f"{args.image}: filled {int(mask.sum())} px with {args.method} in {time.perf_counter() - start:.2f}s -> {args.out}")
    return 0


def _run_depth(args: argparse.Namespace) -> int:
    from .depth import load_depth_model

    inputs = [args.image, args.model]
    outputs.check_file(args.out, inputs=inputs, overwrite=args.overwrite)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    search = [args.models_dir] if args.models_dir else []
    est = load_depth_model(args.model, device=args.device, dtype=dtype, search_dirs=search, allow_download=not args.no_download)
    image = read_image(args.image)
    start = time.perf_counter()
    result = est(image)
    outputs.write(args.out, write_grey, result.disparity.numpy(), args.bits, inputs=inputs, overwrite=args.overwrite)
    print(f"{args.image}: depth in {time.perf_counter() - start:.2f}s -> {args.out} (grey, larger = nearer)")
    return 0


def _run_depth_pool(args: argparse.Namespace) -> int:
    from .instance_depth import pool_instance_depth

    inputs = [args.depth, *args.masks]
    outputs.check_distinct(args.out, args.json)
    outputs.check_file(args.out, inputs=inputs, overwrite=args.overwrite)
    if args.json:
        outputs.check_file(args.json, inputs=inputs, overwrite=args.overwrite)
    depth = read_depth(args.depth)
    masks = torch.from_numpy(np.stack([read_mask(p, tuple(depth.shape)) for p in args.masks]))
    pooled = pool_instance_depth(
        depth, masks, mode=args.mode, blend=args.blend, feet_fraction=args.feet_fraction, resolve_overlaps=not args.keep_overlaps
    )
    outputs.write(args.out, write_grey, pooled.depth.numpy(), args.bits, inputs=inputs, overwrite=args.overwrite)
    record = {
        "mode": args.mode,
        "instances": [
            {"mask": p, "depth": (None if not bool(pooled.valid[i]) else round(float(pooled.values[i]), 6))}
            for i, p in enumerate(args.masks)
        ],
        "back_to_front": [args.masks[i] for i in pooled.order.tolist()],
    }
    if args.json:
        outputs.write_json(args.json, record, inputs=inputs, overwrite=args.overwrite)
    print(json.dumps(record))
    return 0


def _run_refine(args: argparse.Namespace) -> int:
    from .diffusion_inpaint import (
        NEGATIVE_PROMPT,
        RefineSettings,
        background_prompt,
        load_inpaint_pipeline,
        refine_with_diffusers,
    )
    from .inpaint import inpaint

    inputs = [args.image, args.mask, args.model] + ([args.config_dir] if args.config_dir else [])
    outputs.check_file(args.out, inputs=inputs, overwrite=args.overwrite)
    image_u8 = read_image(args.image)
    mask = read_mask(args.mask, image_u8.shape[:2])
    init_u8 = inpaint(image_u8, mask, method=args.init, patch_size=3, seed=args.seed)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    pipe = load_inpaint_pipeline(args.model, config_dir=args.config_dir, dtype=dtype, device=args.device)
    settings = RefineSettings(steps=args.steps, cfg=args.cfg, denoise=args.denoise, seed=args.seed, short_side=args.short_side)
    prompt = background_prompt(args.tags)
    negative = args.negative if args.negative is not None else NEGATIVE_PROMPT

    def progress(step: int, total: int) -> None:
        print(f"\rstep {step}/{total}", end="", file=sys.stderr, flush=True)

    out = refine_with_diffusers(
        pipe, to_float_image(image_u8), torch.from_numpy(mask).float(), to_float_image(init_u8),
        prompt=prompt, negative_prompt=negative, settings=settings, progress=progress,
    )
    print(file=sys.stderr)
    outputs.write(args.out, write_image, out, inputs=inputs, overwrite=args.overwrite)
    print(f"{args.image}: refined with prompt {prompt!r} -> {args.out}")
    return 0


def _add_inpaint(sub) -> None:
    p = sub.add_parser("inpaint", help="remove masked regions (white = fill) with PatchMatch or OpenCV Telea")
    p.add_argument("image")
    p.add_argument("mask", help="mask image, white = fill")
    p.add_argument("--out", required=True)
    p.add_argument("--method", choices=["patchmatch", "telea"], default="patchmatch")
    p.add_argument("--patch-size", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--radius", type=int, default=3, help="Telea neighbourhood radius")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=_run_inpaint)


def _add_depth(sub) -> None:
    p = sub.add_parser("depth", help="relative depth (Depth Anything V2) as a grey PNG, larger = nearer")
    p.add_argument("image")
    p.add_argument("--model", default="small", help="model folder, small (Apache-2.0), base/large (CC-BY-NC-4.0) or repo id")
    p.add_argument("--out", required=True)
    p.add_argument("--bits", type=int, choices=[8, 16], default=8)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models-dir", default=None, help="folder holding <repo name>/ model folders (downloads go there)")
    p.add_argument("--no-download", action="store_true")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=_run_depth)


def _add_depth_pool(sub) -> None:
    p = sub.add_parser("depth-pool", help="flatten the depth inside each instance mask to one value")
    p.add_argument("depth", help="grey depth PNG, larger = nearer")
    p.add_argument("--masks", nargs="+", required=True, help="instance mask PNGs (white = instance)")
    p.add_argument("--mode", choices=["mean", "median", "feet"], default="mean")
    p.add_argument("--blend", type=float, default=1.0)
    p.add_argument("--feet-fraction", type=float, default=0.03)
    p.add_argument("--keep-overlaps", action="store_true", help="do not give overlapped pixels to the nearest instance")
    p.add_argument("--out", required=True)
    p.add_argument("--bits", type=int, choices=[8, 16], default=8)
    p.add_argument("--json", default=None, help="write the per-instance values here")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=_run_depth_pool)


def _add_refine(sub) -> None:
    p = sub.add_parser("inpaint-refine", help="PatchMatch fill + diffusion refinement (diffusers, local files only)")
    p.add_argument("image")
    p.add_argument("mask", help="mask image, white = fill")
    p.add_argument("--model", required=True, help="diffusers folder or single-file SD1.x checkpoint")
    p.add_argument("--config-dir", default=None, help="local diffusers config folder (needed for single files)")
    p.add_argument("--out", required=True)
    p.add_argument("--tags", default="", help="background tags, comma separated (e.g. from `cartoonseg tag`)")
    p.add_argument("--negative", default=None, help="negative prompt (default: the paper's)")
    p.add_argument("--init", choices=["patchmatch", "telea"], default="patchmatch")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--denoise", type=float, default=0.75)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--short-side", type=int, default=1024, help="working short side (0 = native)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="cpu")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=_run_refine)


def add_parsers(subparsers) -> None:
    """Register ``inpaint``, ``depth``, ``depth-pool`` and ``inpaint-refine`` on argparse sub-parsers."""
    _add_inpaint(subparsers)
    _add_depth(subparsers)
    _add_depth_pool(subparsers)
    _add_refine(subparsers)


def build_parser() -> argparse.ArgumentParser:
    return subcommand_parser(add_parsers, __doc__.splitlines()[0])


def main(argv: Sequence[str] | None = None) -> int:
    return run_parser(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
