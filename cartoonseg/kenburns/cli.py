"""Command line for the instance-aware 3D Ken Burns effect (arXiv 2312.01943 §6.1).

``python -m cartoonseg kenburns IMAGE --out OUT.webp|OUT.mp4|DIR [--depth DEPTH.png | --depth-model DIR|small]
[--detector P --refiner P|none [--matting]] [--frames 75] [--playback] [--camera auto|zoom-in|...] [--size 1024]
[--fill far-side|patchmatch|diffusion [--diffusion-model SD --tags "..."]]``

(also ``python -m cartoonseg.kenburns ...``). The pipeline is the paper's: segment the characters (optional; without
``--detector`` the whole image is one depth layer), estimate or read depth (grey PNG, larger = nearer), flatten each
character's depth (``--pool``, default the original's "feet" rule), remove the characters from the background with
PatchMatch (patch 3), inpaint what the camera path uncovers at its end views (``--fill``: PatchMatch by default, or a
diffusion pass with the background tags and the paper's negative prompt), render the clip, and write an animated
WEBP (``.webp``), an H.264 ``.mp4`` or numbered PNG frames plus disocclusion masks (a folder), through
:func:`cartoonseg.io.write_frames`. The sub-command is registered on ``python -m cartoonseg`` by :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from .. import outputs
from .._cli import TAG_LIST_HELP, add_matting_option, area_main, check_matting, load_networks, matte_instances, progress, quiet
from .._cli import seed as cli_seed
from .._diffusers import quiet_library_logs
from ..io import CLIP_SUFFIXES, check_clip_path, check_clip_size, read_depth, read_image, to_float_image, write_frames
from ..ops import MAX_BACKGROUND_DILATE
from .camera import EASINGS, PRESETS, CameraPath
from .disocclusion import CHARACTER_REVEALS, FILLS
from .render import MAX_SIDE, MIN_SIDE, KenBurnsConfig, frame_size, render_kenburns

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


def _refine_settings(args: argparse.Namespace):
    """The sampler settings of ``--fill diffusion`` (checked before anything is loaded), or None for the other fills."""
    if args.fill != "diffusion":
        return None
    from ..inpaint import RefineSettings

    return RefineSettings(steps=args.diffusion_steps, seed=args.seed, short_side=args.short_side)


def _refiner(args: argparse.Namespace, image: torch.Tensor, instances, plate, settings):
    """The diffusion pass of ``--fill diffusion`` (diffusers, local files only), or None for the other fills."""
    if args.fill != "diffusion":
        return None
    if not args.diffusion_model:
        raise ValueError("--fill diffusion needs --diffusion-model (a diffusers SD inpainting folder or a single-file "
                         "checkpoint with --config-dir); without a model use --fill patchmatch")
    from ..inpaint.diffusers_backend import load_inpaint_pipeline
    from .disocclusion import diffusers_refiner

    tags = args.tags
    if tags is None and args.tagger:
        tags = _background_tags(args, image, instances, plate)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    with quiet_library_logs(quiet(args)):  # -q: no transformers/diffusers notices while our pipeline loads
        pipe = load_inpaint_pipeline(args.diffusion_model, config_dir=args.config_dir, dtype=dtype, device=args.device)
    return diffusers_refiner(pipe, tags=tags, negative_prompt=args.negative_prompt, settings=settings)


def _background_tags(args: argparse.Namespace, image: torch.Tensor, instances, plate) -> dict:
    """Background tags from the WD tagger: the plate (characters removed) when there is one, as the original."""
    from ..tagger import DEFAULT_TAGGER_REPO, load_tagger, tag_instances

    source = DEFAULT_TAGGER_REPO if args.tagger == "default" else args.tagger
    download_dir = Path(args.weights_dir) / "tagger" if args.weights_dir else None
    tagger = load_tagger(source, device=args.device, download_dir=download_dir, allow_download=not args.no_download)
    rgb = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    if instances is None:
        return tagger.tag(rgb).general
    bg = None if plate is None else (plate.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    _, tags = tag_instances(tagger, rgb, instances, background=bg)
    return tags.general


#: the library fields the command's options set, as errors name them
_OPTIONS = {"CameraPath.frames": "--frames", "CameraPath.zoom": "--zoom", "CameraPath.fps": "--fps",
            "KenBurnsConfig.key_views": "--key-views"}


def run(args: argparse.Namespace) -> int:
    """Execute the ``kenburns`` sub-command."""
    start = time.perf_counter()
    if not (args.size == 0 or MIN_SIDE <= args.size <= MAX_SIDE):
        raise ValueError(f"--size must be 0 (the input size) or in [{MIN_SIDE}, {MAX_SIDE}] pixels, got {args.size}")
    if not 0 <= args.plate_dilate <= MAX_BACKGROUND_DILATE:
        raise ValueError(f"--plate-dilate must lie in [0, {MAX_BACKGROUND_DILATE}] pixels, got {args.plate_dilate}")
    # the camera, render and sampler options are checked before anything is read or loaded
    try:
        camera = CameraPath(preset=args.camera, frames=args.frames, zoom=args.zoom, easing=args.easing,
                            playback=args.playback, fps=args.fps)
        config = KenBurnsConfig(depth_of_field=args.dof, fill=args.fill, key_views=args.key_views,
                                character_reveals=args.character_reveals,
                                plane_guidance=not args.no_plane_guidance,
                                depth_refine=args.depth_refine)  # the size follows from the image
    except ValueError as exc:  # the library names its fields; a command-line user knows the options
        message = str(exc)
        for field, option in _OPTIONS.items():
            message = message.replace(field, option)
        raise ValueError(message) from None
    settings = _refine_settings(args)
    out = Path(args.out)
    inputs = [p for p in (args.image, args.depth, args.detector, args.refiner) if p]
    if out.suffix.lower() not in CLIP_SUFFIXES:
        if out.suffix:
            raise ValueError(f"--out must be a {' or '.join(CLIP_SUFFIXES)} file or a folder, got {out}")
        outputs.check_folder(out, inputs=inputs, overwrite=args.overwrite, whole=True)
    else:
        outputs.check_file(out, inputs=inputs, overwrite=args.overwrite)
        check_clip_path(out)  # an .mp4 without PyAV fails here, not after the rendering
    check_matting(args)
    image = to_float_image(read_image(args.image))
    h, w = image.shape[:2]
    size = 0 if args.size == 0 or args.size >= max(h, w) else args.size  # --size caps the long side
    if size == 0 and min(h, w) < MIN_SIDE:  # a sliver: the renderer takes its short side to 8 px (same aspect)
        size = min(max(h, w, MIN_SIDE), MAX_SIDE)
    config = dataclasses.replace(config, size=size)
    if out.suffix:  # the frames' size is known now: a format that cannot hold it fails before the slow steps
        check_clip_size(out, frame_size((h, w), size), smaller="a smaller --size")
    depth = _depth(args, image)
    instances = matte_instances(args, image, _segment(args, image))
    background, hole = None, None
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
    refiner = _refiner(args, image, instances, background, settings)
    if refiner is not None and background is not None:
        background = refiner(image, hole, background)  # the paper's diffusion pass over the characters' area
    prepared = time.perf_counter()
    with progress(None, "frames", quiet(args), unit="frame") as bar:

        shown = {"phase": "frames"}

        def phase(desc: str, unit: str):  # one bar: the key views' inpainting first, then the frames
            def update(done: int, total: int) -> None:
                if shown["phase"] != desc or bar.total != total:
                    shown["phase"] = desc
                    bar.set_description(desc, refresh=False)
                    bar.unit = unit
                    bar.reset(total=total)
                bar.update(done - bar.n)

            return update

        clip = render_kenburns(image, depth, masks=instances, background=background, camera=camera, config=config,
                               device=args.device, callback=phase("frames", "frame"), refiner=refiner,
                               key_view_progress=phase("key views", "view"))
    rendered = time.perf_counter()
    if out.suffix:
        written = [outputs.write(out, lambda tmp: write_frames(clip.frames, tmp, clip.fps), inputs=inputs,
                                 overwrite=args.overwrite)]
    else:  # the folder is one result: built aside and swapped in (a rerun leaves no frames of a longer earlier clip)
        with outputs.result_dir(out, inputs=inputs, overwrite=args.overwrite) as res:
            written = write_frames(clip.frames, res.path, clip.fps, extra={"disocclusion": clip.disocclusion})
        written = [out / p.name for p in written]
    n_inst = 0 if instances is None else len(instances)
    views = "" if clip.key_views is None else f", {len(clip.key_views.hole_pixels)} key views inpainted ({args.fill})"
    print(f"{args.image}: {n_inst} characters, {len(clip.frames)} frames {clip.frames.shape[2]}x{clip.frames.shape[1]} "
          f"@ {clip.fps:g} fps{views}; prepare {prepared - start:.1f}s, render {rendered - prepared:.1f}s -> "
          + (str(written[0]) if out.suffix else
             f"{out}/ ({len(written)} frame PNGs, {len(written)} disocclusion PNGs)"))
    return 0


def _add_kenburns(sub) -> None:
    p = sub.add_parser("kenburns",
                       help="instance-aware 3D Ken Burns clip from one image (animated WEBP, MP4 or PNG frames)")
    p.add_argument("image", help="input image")
    p.add_argument("--out", required=True,
                   help="OUT.webp (animated), OUT.mp4 (H.264, needs the extra 'video') or a folder for PNG frames + "
                        "disocclusion masks")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--depth", help="grey depth image, larger = nearer (8 or 16 bit; a 32-bit TIFF with values in "
                                     "[0,1] or [0,65535])")
    src.add_argument("--depth-model", default="small",
                     help="depth model folder or small|base|large (Depth Anything V2), zoedepth, marigold-lcm, "
                          "marigold (default small; used without --depth)")
    p.add_argument("--detector", default=None,
                   help="detector weights path or released name ('detector'); omit to render without characters")
    p.add_argument("--refiner", default="refiner", help="refiner weights path, released name, or 'none'")
    p.add_argument("--score-thr", type=float, default=0.3, help="minimum detection score, 0..1")
    p.add_argument("--mask-thr", type=float, default=None,
                   help="mask probability threshold of the characters, 0..1 (default: the refiner's, 0.3; with "
                        "--refiner none the detector's 0.5 unless given)")
    p.add_argument("--pool", choices=["feet", "mean", "median", "none"], default="feet",
                   help="per-character depth: feet (original code), mean (paper), median, none")
    p.add_argument("--plate-dilate", type=int, default=5, help="pixels the character union grows for the plate, 0..512")
    p.add_argument("--camera", choices=list(PRESETS), default="auto",
                   help="camera motion: auto = the original's zoom towards the least-revealing crop")
    p.add_argument("--frames", type=int, default=75, help="rendered time steps (before --playback), 1..10000")
    p.add_argument("--zoom", type=float, default=1.25, help="zoom of the camera move, 1..8")
    p.add_argument("--easing", choices=list(EASINGS), default="linear", help="speed profile of the move")
    p.add_argument("--playback", action="store_true", help="append the reversed clip (ping-pong)")
    p.add_argument("--fps", type=float, default=25.0, help="frames per second of the clip, 0.01..240")
    p.add_argument("--size", type=int, default=1024,
                   help="cap on the long side of the frames, 8..8192 (0 = input size); frames whose short side "
                        "would be under 8 px get 8 px there, keeping the aspect")
    p.add_argument("--dof", action="store_true",
                   help="rack focus to the nearest character, from the far end of the depth range (from the near end "
                        "when the character stands in the farther half)")
    p.add_argument("--fill", choices=list(FILLS), default="patchmatch",
                   help="what fills the regions the camera uncovers: patchmatch (default: inpainted at the path's end "
                        "views, no model needed), diffusion (PatchMatch, then an SD inpainting pass; needs "
                        "--diffusion-model), far-side (per-frame smear from the far side, fastest)")
    p.add_argument("--key-views", type=int, default=4, help="most views of the path that are inpainted (patchmatch, "
                                                            "diffusion)")
    p.add_argument("--character-reveals", choices=list(CHARACTER_REVEALS), default="key-views",
                   help="background revealed behind the characters (patchmatch, diffusion): key-views (default: "
                        "inpainted at the key views like every other disocclusion) or plate (the PatchMatch plate "
                        "of the characters' area)")
    p.add_argument("--no-plane-guidance", action="store_true",
                   help="patchmatch, diffusion: inpaint a slanted ground in image space too (default: in the "
                        "ground's own coordinates, so its pattern keeps its perspective, at the ground's depth)")
    p.add_argument("--depth-refine", action=argparse.BooleanOptionalAction,
                   default=KenBurnsConfig.depth_refine,
                   help="snap the ramps a depth estimator leaves at depth edges to their near or far side, guided by "
                        "the image, so a moved camera opens a hole there instead of a smeared skin; for an "
                        "estimator's depth (--depth-model); a depth with sharp steps is left as it is (default: %(default)s)")
    p.add_argument("--diffusion-model", default=None,
                   help="--fill diffusion: diffusers SD inpainting folder or single-file SD1.x checkpoint (local only)")
    p.add_argument("--config-dir", default=None, help="local diffusers config folder (for a single-file checkpoint)")
    p.add_argument("--tags", default=None, metavar="TAGS",
                   help=f"--fill diffusion: background tags for the prompt ({TAG_LIST_HELP})")
    p.add_argument("--tagger", default=None,
                   help="--fill diffusion without --tags: tag the background with the WD tagger (folder or 'default')")
    p.add_argument("--negative-prompt", default=None, help="--fill diffusion: negative prompt (default: the paper's)")
    p.add_argument("--diffusion-steps", type=int, default=32, help="--fill diffusion: sampler steps, 1..10000")
    p.add_argument("--short-side", type=int, default=1024,
                   help="--fill diffusion: working short side, 64..8192 (0 = native)")
    p.add_argument("--seed", type=cli_seed, default=0, help="--fill diffusion: sampling seed")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="--fill diffusion: model precision")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps, or auto (CUDA when present)")
    p.add_argument("--weights-dir", default=None,
                   help="folder with the released weights (and depth/<model>, tagger/<name>; "
                        "default: ~/.cache/cartoonseg)")
    p.add_argument("--no-download", action="store_true", help="never download weights")
    add_matting_option(p, "they are the character layers' alpha (with --detector), and the plate covers every "
                          "pixel they reach")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=run)


def add_parsers(subparsers) -> None:
    """Register the ``kenburns`` sub-command on an argparse sub-parsers object."""
    _add_kenburns(subparsers)


#: ``python -m cartoonseg.kenburns ...`` with the error policy of :mod:`cartoonseg._cli`
main = area_main(add_parsers, __doc__)
