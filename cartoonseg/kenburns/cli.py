"""Command line for the instance-aware 3D Ken Burns effect (arXiv 2312.01943 §6.1).

``python -m cartoonseg kenburns IMAGE --out OUT.webp|OUT.mp4|DIR [--depth DEPTH.png | --depth-model DIR|small]
[--detector P --refiner P|none] [--frames 75] [--playback] [--camera auto|zoom-in|...] [--size 1024]``

(also ``python -m cartoonseg.kenburns ...``). The pipeline is the paper's: segment the characters (optional; without
``--detector`` the whole image is one depth layer), estimate or read depth (grey PNG, larger = nearer), flatten each
character's depth (``--pool``, default the original's "feet" rule), remove the characters from the background with
PatchMatch (patch 3), render the clip, and write an animated WEBP (``.webp``), an H.264 ``.mp4`` or numbered PNG
frames plus disocclusion masks (a folder), through :func:`cartoonseg.io.write_frames`. The sub-command is registered on ``python -m cartoonseg`` by :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .._cli import area_main, load_networks
from ..io import read_depth, read_image, to_float_image, write_frames
from .camera import EASINGS, PRESETS, CameraPath
from .render import KenBurnsConfig, render_kenburns

__all__ = ["add_parsers", "main", "run"]


def _segment(args: argparse.Namespace, image: torch.Tensor):
    if not args.detector:
        return None
    from .. import Segmenter

    search = [Path(args.weights_dir)] if args.weights_dir else []
    detector, refiner = load_networks(args.detector, args.refiner, search_dirs=search,
                                      allow_download=not args.no_download, device=args.device)
    seg = Segmenter(detector, refiner, score_thr=args.score_thr, mask_thr=args.mask_thr)
    instances = seg(image)
    return instances if len(instances) else None


def _depth(args: argparse.Namespace, image: torch.Tensor) -> torch.Tensor:
    if args.depth:
        return read_depth(args.depth)
    from ..depth import load_depth_model

    search = [Path(args.weights_dir) / "depth"] if args.weights_dir else []
    model = load_depth_model(args.depth_model, device=args.device, search_dirs=search,
                             allow_download=not args.no_download)
    return model(image).disparity.float().cpu()


def run(args: argparse.Namespace) -> int:
    """Execute the ``kenburns`` sub-command."""
    start = time.perf_counter()
    image = to_float_image(read_image(args.image))
    h, w = image.shape[:2]
    depth = _depth(args, image)
    instances = _segment(args, image)
    background = None
    if instances is not None:
        from ..depth import pool_instance_depth
        from ..inpaint import inpaint
        from ..ops import background_mask

        if args.pool != "none":
            depth = pool_instance_depth(depth, instances, mode=args.pool).depth
        hole = background_mask(instances, dilate=args.plate_dilate) > 0.5
        if bool(hole.any()) and not bool(hole.all()):
            background = torch.as_tensor(inpaint(image, hole, method="patchmatch", patch_size=3)).float()
            if background.max() > 1.0:
                background = background / 255.0
    size = 0 if args.size <= 0 or args.size >= max(h, w) else args.size  # --size caps the long side
    camera = CameraPath(preset=args.camera, frames=args.frames, zoom=args.zoom, easing=args.easing,
                        playback=args.playback, fps=args.fps)
    config = KenBurnsConfig(size=size, depth_of_field=args.dof)
    prepared = time.perf_counter()
    clip = render_kenburns(image, depth, masks=instances, background=background, camera=camera, config=config,
                           device=args.device)
    rendered = time.perf_counter()
    written = write_frames(clip.frames, args.out, clip.fps, extra={"disocclusion": clip.disocclusion})
    n_inst = 0 if instances is None else len(instances)
    print(f"{args.image}: {n_inst} characters, {len(clip.frames)} frames {clip.frames.shape[2]}x{clip.frames.shape[1]} "
          f"@ {clip.fps:g} fps; prepare {prepared - start:.1f}s, render {rendered - prepared:.1f}s -> {written[0]}"
          + (f" (+{len(written) - 1} more)" if len(written) > 1 else ""))
    return 0


def _add_kenburns(sub) -> None:
    p = sub.add_parser("kenburns", help="instance-aware 3D Ken Burns clip from one image (animated WEBP or PNG frames)")
    p.add_argument("image", help="input image")
    p.add_argument("--out", required=True,
                   help="OUT.webp (animated), OUT.mp4 (H.264, needs the extra 'video') or a folder for PNG frames + "
                        "disocclusion masks")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--depth", help="grey depth PNG, larger = nearer (8 or 16 bit)")
    src.add_argument("--depth-model", default="small",
                     help="Depth Anything V2 folder or small|base|large (default small; used without --depth)")
    p.add_argument("--detector", default=None,
                   help="detector weights path or released name ('detector'); omit to render without characters")
    p.add_argument("--refiner", default="refiner", help="refiner weights path, released name, or 'none'")
    p.add_argument("--score-thr", type=float, default=0.3)
    p.add_argument("--mask-thr", type=float, default=0.3)
    p.add_argument("--pool", choices=["feet", "mean", "median", "none"], default="feet",
                   help="per-character depth: feet (original code), mean (paper), median, none")
    p.add_argument("--plate-dilate", type=int, default=5, help="pixels the character union grows for the plate")
    p.add_argument("--camera", choices=list(PRESETS), default="auto")
    p.add_argument("--frames", type=int, default=75)
    p.add_argument("--zoom", type=float, default=1.25)
    p.add_argument("--easing", choices=list(EASINGS), default="linear")
    p.add_argument("--playback", action="store_true", help="append the reversed clip (ping-pong)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--size", type=int, default=1024, help="cap on the long side of the frames (0 = input size)")
    p.add_argument("--dof", action="store_true", help="rack focus from the background to the nearest character")
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights-dir", default=None, help="folder with the released weights (and depth/<model>)")
    p.add_argument("--no-download", action="store_true", help="never download weights")
    p.set_defaults(func=run)


def add_parsers(subparsers) -> None:
    """Register the ``kenburns`` sub-command on an argparse sub-parsers object."""
    _add_kenburns(subparsers)


#: ``python -m cartoonseg.kenburns ...`` with the error policy of :mod:`cartoonseg._cli`
main = area_main(add_parsers, __doc__)
