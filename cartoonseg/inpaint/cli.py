"""Command line for background inpainting (paper §6.1): ``python -m cartoonseg inpaint|inpaint-refine`` (or
``python -m cartoonseg.inpaint``).

* ``inpaint IMAGE MASK --out OUT.png [--method patchmatch|telea] [--patch-size 3] [--seed S]`` (mask: white = fill)
* ``inpaint-refine IMAGE MASK --model SD --out OUT.png [--config-dir DIR] [--tags "..."] [--steps 32] ...``
  (first fill + diffusion refinement through ``diffusers``, local files only)

The sub-commands are registered on ``python -m cartoonseg`` by :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import time

import torch

from .. import outputs
from .._cli import TAG_LIST_HELP, area_main, progress, quiet
from .._diffusers import quiet_library_logs
from .._cli import seed as cli_seed
from ..io import check_image_path, read_image, read_mask, to_float_image, write_image
from .diffusion import INIT_FILLS, NEGATIVE_PROMPT, PROMPT_SUFFIX, RefineSettings, background_prompt, refine_background
from .patchmatch import INPAINT_METHODS, fill_method, inpaint

__all__ = ["add_parsers", "main"]


def _run_inpaint(args: argparse.Namespace) -> int:
    inputs = [args.image, args.mask]
    check_image_path(args.out)
    outputs.check_file(args.out, inputs=inputs, overwrite=args.overwrite)
    image = read_image(args.image)
    mask = read_mask(args.mask, image.shape[:2])
    used = fill_method(mask, method=args.method, patch_size=args.patch_size)  # bad options fail here, at once
    start = time.perf_counter()
    with progress(None, used, quiet(args), unit="iteration") as bar:  # PatchMatch: one tick per EM iteration
        out = inpaint(image, mask, method=args.method, patch_size=args.patch_size, seed=args.seed, radius=args.radius,
                      interrupt=lambda: bar.update(1))
    outputs.write(args.out, write_image, out, inputs=inputs, overwrite=args.overwrite)
    what = "a flat grey (the mask covers everything)" if used == "flat" else used
    print(f"{args.image}: filled {int(mask.sum())} px with {what} in {time.perf_counter() - start:.2f}s -> {args.out}")
    return 0


def _run_refine(args: argparse.Namespace) -> int:
    from .diffusers_backend import DiffusersInpaintBackend, load_inpaint_pipeline

    # the options are checked before anything is read or loaded
    settings = RefineSettings(steps=args.steps, cfg=args.cfg, denoise=args.denoise, seed=args.seed,
                              short_side=args.short_side)
    inputs = [args.image, args.mask, args.model] + ([args.config_dir] if args.config_dir else [])
    check_image_path(args.out)
    outputs.check_file(args.out, inputs=inputs, overwrite=args.overwrite)
    image = to_float_image(read_image(args.image))
    mask = torch.from_numpy(read_mask(args.mask, tuple(image.shape[:2]))).float()
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    with quiet_library_logs(quiet(args)):  # -q: no transformers/diffusers notices while our pipeline loads
        pipe = load_inpaint_pipeline(args.model, config_dir=args.config_dir, dtype=dtype, device=args.device)
    prompt = background_prompt(args.tags)
    negative = args.negative if args.negative is not None else NEGATIVE_PROMPT

    with progress(None, "sampling", quiet(args), unit="step") as bar:

        def on_step(step: int, total: int) -> None:
            if bar.total != total:
                bar.reset(total=total)
            bar.update(step - bar.n)

        out, _ = refine_background(image, mask, DiffusersInpaintBackend(pipe, on_step), prompt=prompt,
                                   negative_prompt=negative, settings=settings, init=args.init)
    outputs.write(args.out, write_image, out, inputs=inputs, overwrite=args.overwrite)
    print(f"{args.image}: refined with prompt {prompt!r} -> {args.out}")
    return 0


def _add_inpaint(sub) -> None:
    p = sub.add_parser("inpaint", help="remove masked regions (white = fill) with PatchMatch or OpenCV Telea")
    p.add_argument("image", help="image file to fill")
    p.add_argument("mask", help="mask image, white = fill")
    p.add_argument("--out", required=True, help="output image file")
    p.add_argument("--method", choices=list(INPAINT_METHODS), default="patchmatch",
                   help="patchmatch: texture synthesis (the paper); telea: fast, smooth")
    p.add_argument("--patch-size", type=int, default=3, help="PatchMatch patch side in pixels (odd)")
    p.add_argument("--seed", type=cli_seed, default=0, help="PatchMatch's random initialisation")
    p.add_argument("--radius", type=int, default=3, help="Telea neighbourhood radius")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=_run_inpaint)


def _add_refine(sub) -> None:
    p = sub.add_parser("inpaint-refine", help="PatchMatch fill + diffusion refinement (diffusers, local files only)")
    p.add_argument("image", help="image file to fill")
    p.add_argument("mask", help="mask image, white = fill")
    p.add_argument("--model", required=True, help="diffusers folder or single-file SD1.x checkpoint")
    p.add_argument("--config-dir", default=None, help="local diffusers config folder (needed for single files)")
    p.add_argument("--out", required=True, help="output image file")
    p.add_argument("--tags", default="", metavar="TAGS",
                   help=f"background tags ({TAG_LIST_HELP}; e.g. from `cartoonseg tag`); the prompt is "
                        f"'<tags>, {PROMPT_SUFFIX}'")
    p.add_argument("--negative", default=None, help="negative prompt (default: the paper's)")
    p.add_argument("--init", choices=list(INIT_FILLS), default="patchmatch", help="first fill of the hole (image: none)")
    p.add_argument("--steps", type=int, default=32, help="sampler steps, 1..10000 (the paper: 32)")
    p.add_argument("--cfg", type=float, default=7.0, help="classifier-free guidance scale, 0..100")
    p.add_argument("--denoise", type=float, default=0.75, help="share of the first fill that is re-synthesised, 0..1")
    p.add_argument("--seed", type=cli_seed, default=0, help="sampler seed")
    p.add_argument("--short-side", type=int, default=1024, help="working short side, 64..8192 (0 = native)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="compute precision of the pipeline")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps, or auto (CUDA when present)")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=_run_refine)


def add_parsers(subparsers) -> None:
    """Register ``inpaint`` and ``inpaint-refine`` on argparse sub-parsers."""
    _add_inpaint(subparsers)
    _add_refine(subparsers)


#: ``python -m cartoonseg.inpaint ...`` with the error policy of :mod:`cartoonseg._cli`
main = area_main(add_parsers, __doc__)
