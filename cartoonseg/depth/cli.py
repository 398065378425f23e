"""Command line for depth (paper §6.1): ``python -m cartoonseg depth|depth-pool`` (or ``python -m cartoonseg.depth``).

* ``depth IMAGE --model DIR|small|base|large|zoedepth|marigold-lcm|marigold --out DEPTH.png [--bits 8|16]`` (grey,
  larger = nearer)
* ``depth-pool DEPTH.png --masks MASK.png... --mode mean|median|feet --out OUT.png [--blend B] [--json V.json]``

The sub-commands are registered on ``python -m cartoonseg`` by :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from .. import outputs
from .._cli import area_main, quiet
from .._diffusers import quiet_library_logs
from ..device import PRECISIONS
from ..io import check_image_path, read_depth, read_image, read_mask, write_grey
from .estimator import load_depth_model
from .pooling import POOL_MODES, pool_instance_depth

__all__ = ["add_parsers", "main"]


def _run_depth(args: argparse.Namespace) -> int:
    from ..device import DTYPES

    inputs = [args.image, args.model]
    check_image_path(args.out, bits=args.bits)
    outputs.check_file(args.out, inputs=inputs, overwrite=args.overwrite)
    image = read_image(args.image)  # an unreadable image fails now, not after the model loads (or downloads)
    search = [args.models_dir] if args.models_dir else []
    with quiet_library_logs(quiet(args)):  # -q: no transformers/diffusers notices while our model loads
        est = load_depth_model(args.model, device=args.device, dtype=DTYPES[args.precision], search_dirs=search,
                               allow_download=not args.no_download, steps=args.steps, ensemble=args.ensemble,
                               processing_resolution=args.processing_resolution)
    start = time.perf_counter()
    result = est(image)
    outputs.write(args.out, write_grey, result.disparity.numpy(), args.bits, inputs=inputs, overwrite=args.overwrite)
    print(f"{args.image}: depth in {time.perf_counter() - start:.2f}s -> {args.out} (grey, larger = nearer)")
    return 0


def _run_depth_pool(args: argparse.Namespace) -> int:
    inputs = [args.depth, *args.masks]
    check_image_path(args.out, bits=args.bits)
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


def _add_depth(sub) -> None:
    p = sub.add_parser("depth", help="relative depth (Depth Anything V2, ZoeDepth or Marigold) as a grey PNG, "
                                     "larger = nearer")
    p.add_argument("image", help="image file")
    p.add_argument("--model", default="small",
                   help="model folder, repo id, or small (Depth Anything V2, Apache-2.0), base/large (CC-BY-NC-4.0), "
                        "zoedepth (MIT), marigold-lcm / marigold (diffusers; pip install 'cartoonseg[diffusion]')")
    p.add_argument("--out", required=True, help="output PNG (grey, larger = nearer)")
    p.add_argument("--bits", type=int, choices=[8, 16], default=8, help="bits per pixel; 16 needs a .png or .tif/.tiff --out")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="bf16 where the device runs it (else fp32 with a warning); fp16 on a GPU only (refused on CPU)")
    p.add_argument("--steps", type=int, default=None, help="Marigold: denoising steps, 0..1000 (default: the model's)")
    p.add_argument("--ensemble", type=int, default=None,
                   help="Marigold: predictions averaged, 1..64 (default: the model's)")
    p.add_argument("--processing-resolution", type=int, default=None,
                   help="Marigold: long side the model works at, 0..8192 (default: the model's, 768 for the published "
                        "ones)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps, or auto (CUDA when present)")
    p.add_argument("--models-dir", default=None,
                   help="folder holding <repo name>/ model folders (downloads go there; "
                        "default: ~/.cache/cartoonseg/depth)")
    p.add_argument("--no-download", action="store_true", help="never download the model (error when missing)")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=_run_depth)


def _add_depth_pool(sub) -> None:
    p = sub.add_parser("depth-pool", help="flatten the depth inside each instance mask to one value")
    p.add_argument("depth", help="grey depth image, larger = nearer: 8/16 bit, or a 32-bit TIFF with values in [0,1] "
                                    "(float) or [0,65535] (integer)")
    p.add_argument("--masks", nargs="+", required=True, help="instance mask PNGs (white = instance)")
    p.add_argument("--mode", choices=list(POOL_MODES), default="mean",
                   help="value per instance: mean (the paper), median, or feet (the original code)")
    p.add_argument("--blend", type=float, default=1.0, help="1 = one flat layer per instance; 0 = keep the depth")
    p.add_argument("--feet-fraction", type=float, default=0.03,
                   help="feet mode: bottom share of the instance's height used")
    p.add_argument("--keep-overlaps", action="store_true", help="do not give overlapped pixels to the nearest instance")
    p.add_argument("--out", required=True, help="output PNG (grey, larger = nearer)")
    p.add_argument("--bits", type=int, choices=[8, 16], default=8, help="bits per pixel; 16 needs a .png or .tif/.tiff --out")
    p.add_argument("--json", default=None, help="write the per-instance values here")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=_run_depth_pool)


def add_parsers(subparsers) -> None:
    """Register ``depth`` and ``depth-pool`` on argparse sub-parsers."""
    _add_depth(subparsers)
    _add_depth_pool(subparsers)


#: ``python -m cartoonseg.depth ...`` with the error policy of :mod:`cartoonseg._cli`
main = area_main(add_parsers, __doc__)
