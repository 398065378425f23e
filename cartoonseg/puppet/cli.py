"""Command line for puppet animation (arXiv 2312.01943 §6.3).

``python -m cartoonseg puppet IMAGE --out OUT.webp|OUT.mp4|DIR [--masks M1.png M2.png ...]
[--detector P --refiner P|none] [--motion PRESET | --poses POSES.json | --bvh FILE.bvh | --keyframes K.json]
[--instances 0,2] [--frames N] [--fps F] [--seed S] [--matting]``

(also ``python -m cartoonseg.puppet puppet ...``). The characters come from ``--masks`` (grey PNGs from any
segmenter, white = character, soft edges kept) or from the two-stage segmenter; each is rigged (``--handles`` JSON,
``--pose-rig`` POSE_KEYPOINT JSON of this image, else the automatic skeleton), the background plate is ``--plate``
or PatchMatch (7x7 patches) over the characters (with ``--matting`` cut out by their alpha mattes), and the motion
is a preset (default ``idle-sway``), a pose sequence (POSE_KEYPOINT JSON, e.g. DWPose on a driving video), a BVH
file or keyframed handles. Output: an animated WEBP (``.webp``), an H.264 MP4 (``.mp4``, needs PyAV:
``pip install av``) or a folder of ``frame_00000.png`` plus ``mask_00000.png`` (the characters' visible alpha per
frame).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import outputs
from .._cli import add_matting_option, area_main, check_matting, load_networks, matte_instances, progress
from .._cli import seed as cli_seed
from ..config import MAX_CANVAS
from ..io import (CLIP_SUFFIXES, MAX_FPS, MAX_FRAMES, MIN_FPS, check_clip_path, check_clip_size, check_fps, read_image,
                  read_soft_mask, write_frames)
from .motion import PRESETS, RETARGET_MODES, KeyframeMotion, PresetMotion, RetargetMotion
from .render import background_plate, default_frames, render_frames
from .rig import MAX_RING, RigConfig, build_rig
from .skeleton import parse_handles, parse_pose_keypoint

__all__ = ["add_parsers", "main", "parse_instances", "run"]


def _read_soft_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    """A mask file as float32 ``[H,W]`` in [0,1], soft edges kept (the puppet's texture alpha)."""
    return read_soft_mask(path, size)


def parse_instances(text: str | None) -> list[int] | None:
    """``"0,2"`` -> ``[0, 2]``; None/``"all"``/empty -> None (every instance)."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        values = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ValueError(f"--instances must be comma-separated indices like 0,2, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"--instances must be non-negative indices, got {text!r}")
    return values


def _check_out(out: Path, inputs: Sequence[str], overwrite: bool) -> None:
    """Check ``--out`` against the output policy (:mod:`cartoonseg.outputs`) before the slow steps."""
    if out.suffix and out.suffix.lower() not in CLIP_SUFFIXES:
        raise ValueError(f"--out must end with .webp or .mp4, or be a folder; got {out}")
    if out.suffix:
        outputs.check_file(out, inputs=inputs, overwrite=overwrite)
    else:
        outputs.check_folder(out, inputs=inputs, overwrite=overwrite, whole=True)
    check_clip_path(out)  # an .mp4 without PyAV (or its encoder) fails before the slow steps


def _instances(args: argparse.Namespace, image: np.ndarray):
    from ..structures import Instances

    h, w = image.shape[:2]
    if args.masks:
        import torch

        masks = torch.from_numpy(np.stack([_read_soft_mask(p, (h, w)) for p in args.masks]))
        return Instances.from_masks(masks, mask_thr=0.5)
    from ..segmenter import Segmenter

    search = [Path(args.weights_dir)] if args.weights_dir else []
    detector, refiner = load_networks(args.detector, args.refiner, search_dirs=search,
                                      allow_download=not args.no_download, device=args.device)
    return Segmenter(detector, refiner, score_thr=args.score_thr, mask_thr=args.mask_thr)(image)


def _motion(args: argparse.Namespace, size: tuple[int, int]):
    if args.poses:
        return RetargetMotion.from_pose_keypoint(args.poses, canvas=size, fps=args.poses_fps, mode=args.retarget)
    if args.bvh:
        return RetargetMotion.from_bvh(args.bvh, yaw=args.bvh_yaw, up=args.bvh_up, mode=args.retarget)
    if args.keyframes:
        return KeyframeMotion.from_json(args.keyframes)
    return PresetMotion(args.motion, strength=args.strength, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    """Execute the ``puppet`` sub-command."""
    out = Path(args.out)
    inputs = [p for p in (args.image, *(args.masks or []), args.plate, args.poses, args.bvh, args.keyframes,
                          args.handles, args.pose_rig, args.detector, args.refiner) if p]
    # the options are checked before anything is read or built
    check_fps(args.fps, "--fps")
    if args.poses_fps is not None and not (math.isfinite(args.poses_fps) and args.poses_fps > 0):
        raise ValueError(f"--poses-fps must be a finite number > 0, got {args.poses_fps}")
    if args.frames is not None and not 1 <= args.frames <= MAX_FRAMES:
        raise ValueError(f"--frames must lie in [1, {MAX_FRAMES}], got {args.frames}")
    if not 0 <= args.plate_dilate <= MAX_RING:
        raise ValueError(f"--plate-dilate must lie in [0, {MAX_RING}] pixels, got {args.plate_dilate}")
    if not (args.mesh_spacing == 0 or 1.0 <= args.mesh_spacing <= MAX_CANVAS):  # also refuses NaN
        raise ValueError(f"--mesh-spacing must be 0 (automatic) or in [1, {MAX_CANVAS}] pixels, "
                         f"got {args.mesh_spacing}")
    from .mesh import MeshConfig

    config = RigConfig(mesh=MeshConfig(spacing=args.mesh_spacing), ring=args.plate_dilate)
    _check_out(out, inputs, args.overwrite)
    check_matting(args)
    start = time.perf_counter()
    image = read_image(args.image)
    h, w = image.shape[:2]
    check_clip_size(out, (h, w), smaller="a smaller picture")  # the frames have the picture's size
    motion = _motion(args, (h, w))  # parse motion files before the slow steps: bad input fails fast
    n = args.frames or default_frames(motion, args.fps)  # so does a motion too long to render
    if n > MAX_FRAMES:
        raise ValueError(f"the motion lasts {n} frames at {args.fps:g} fps, more than {MAX_FRAMES}; give --frames "
                         "or a lower --fps")
    # so are the rig's files (build_rig reads them again; parsing is cheap)
    handles = parse_handles(args.handles, image_size=(h, w)) if args.handles else None
    if args.pose_rig:
        parse_pose_keypoint(args.pose_rig, image_size=(h, w))
    if isinstance(motion, KeyframeMotion):  # and the keyed joints against the names the skeletons can have
        motion.check_joints(handles, pose_rig=bool(args.pose_rig))
    instances = matte_instances(args, image, _instances(args, image))
    if len(instances) == 0:
        raise ValueError(f"{args.image}: no character found (lower --score-thr, or give --masks)")
    with progress(None, "rig", args.quiet, unit="character", leave=False) as bar:
        def rigged_one(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        rig = build_rig(instances, poses=args.pose_rig, handles=args.handles,
                        select=parse_instances(args.instances), config=config, callback=rigged_one)
    if not rig.characters:
        raise ValueError(f"{args.image}: no instance could be rigged ({'; '.join(rig.notes)})")
    rigged = time.perf_counter()
    if args.plate:
        plate = read_image(args.plate)
        if plate.shape[:2] != (h, w):
            raise ValueError(f"--plate is {plate.shape[1]}x{plate.shape[0]} but the image is {w}x{h}")
    else:
        plate = background_plate(image, rig, seed=args.seed)
    plated = time.perf_counter()
    clip, alphas = [], []
    with progress(n, "puppet", args.quiet, unit="frame", leave=False) as bar:
        for frame, mask in render_frames(image, rig, motion, frames=n, fps=args.fps, plate=plate,
                                         callback=lambda done, total: bar.update(1)):
            clip.append((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8))  # uint8: a long clip stays small
            alphas.append((np.clip(mask, 0, 1) * 255 + 0.5).astype(np.uint8))
    frames, masks = np.stack(clip), np.stack(alphas)
    if out.suffix:
        written = [outputs.write(out, lambda tmp: write_frames(frames, tmp, args.fps), inputs=inputs,
                                 overwrite=args.overwrite)]
    else:  # the folder is one result: built aside and swapped in (a rerun leaves no frames of a longer earlier clip)
        with outputs.result_dir(out, inputs=inputs, overwrite=args.overwrite) as res:
            written = [out / p.name for p in write_frames(frames, res.path, args.fps, extra={"mask": masks})]
    done = time.perf_counter()
    if not args.quiet:
        for note in rig.notes:
            print(f"note: {note}")
        print(f"{args.image}: {len(rig.characters)} characters rigged in {rigged - start:.1f}s, plate "
              f"{plated - rigged:.1f}s, {n} frames {w}x{h} @ {args.fps:g} fps in {done - plated:.1f}s -> "
              + (str(written[0]) if out.suffix else f"{out}/ ({len(written)} frame PNGs, {len(written)} mask PNGs)"))
    return 0


def _add_puppet(sub) -> None:
    p = sub.add_parser("puppet", help="animate the characters of one picture like puppets (animated WEBP, MP4 or PNG frames)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="input picture")
    p.add_argument("--out", required=True, help="OUT.webp, OUT.mp4 (needs PyAV) or a folder for PNG frames + masks")
    p.add_argument("--masks", nargs="+", help="instance masks as grey PNGs (white = character); skips the segmenter")
    p.add_argument("--detector", default="detector", help="detector weights path or released name (without --masks)")
    p.add_argument("--refiner", default="refiner", help="refiner weights path, released name, or 'none'")
    p.add_argument("--score-thr", type=float, default=0.3, help="minimum detection score, 0..1")
    p.add_argument("--mask-thr", type=float, default=None,
                   help="mask probability threshold of the characters, 0..1 (default: the refiner's, 0.3; with "
                        "--refiner none the detector's 0.5 unless given)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--motion", choices=list(PRESETS), default="idle-sway", help="procedural preset (default idle-sway)")
    src.add_argument("--poses", help="POSE_KEYPOINT JSON sequence (e.g. DWPose on a driving video) to retarget")
    src.add_argument("--bvh", help="BVH motion capture file to retarget (front view)")
    src.add_argument("--keyframes", help="keyframed handle positions JSON")
    p.add_argument("--poses-fps", type=float, default=None, help="frame rate of --poses (default: --fps, frame for frame)")
    p.add_argument("--retarget", choices=list(RETARGET_MODES), default="absolute",
                   help="copy bone directions (absolute) or their changes since the first frame (relative)")
    p.add_argument("--bvh-yaw", type=float, default=0.0, help="turn the BVH performer by this many degrees before projecting")
    p.add_argument("--bvh-up", choices=["y", "z"], default="y", help="the BVH file's up axis")
    p.add_argument("--pose-rig", help="POSE_KEYPOINT JSON of this picture (e.g. DWPose): rig from its joints")
    p.add_argument("--handles", help="handles JSON: joints per instance (wins over --pose-rig)")
    p.add_argument("--instances", default=None, help="comma-separated instance indices to animate (default all)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"frames to render, 1..{MAX_FRAMES} (default: the motion's length)")
    p.add_argument("--fps", type=float, default=12.0,
                   help=f"frames per second of the animation, {MIN_FPS:g}..{MAX_FPS:g}")
    p.add_argument("--strength", type=float, default=1.0, help="amplitude of the preset motion, >= 0")
    p.add_argument("--seed", type=cli_seed, default=0, help="seed of the plate inpainting and per-character preset variation")
    p.add_argument("--plate", help="background plate image (e.g. a diffusion inpainting); default: PatchMatch "
                                    "with 7x7 patches over the characters grown by --plate-dilate")
    p.add_argument("--plate-dilate", type=int, default=5,
                   help=f"pixels the characters grow by for the plate, 0..{MAX_RING}")
    p.add_argument("--mesh-spacing", type=float, default=0.0,
                   help=f"mesh sample spacing in pixels, 1..{MAX_CANVAS} (0 = automatic)")
    p.add_argument("--device", default="cpu",
                   help="device of the segmenter: cpu, cuda, cuda:N, mps, or auto (CUDA when present)")
    p.add_argument("--weights-dir", default=None,
                   help="folder with the released weights (default: ~/.cache/cartoonseg)")
    p.add_argument("--no-download", action="store_true", help="never download weights")
    add_matting_option(p, "the characters are cut out and moved with them (hair strands and anti-aliased "
                          "outlines without the old background), and the plate covers every pixel they reach")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=run)


def add_parsers(subparsers) -> None:
    """Register the ``puppet`` sub-command on an argparse sub-parsers object."""
    _add_puppet(subparsers)


#: ``python -m cartoonseg.puppet ...`` with the error policy of :mod:`cartoonseg._cli`
main = area_main(add_parsers, __doc__)
