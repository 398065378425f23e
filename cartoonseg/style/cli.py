"""Command line ``python -m cartoonseg style IMAGE... --model SD --controlnet CN --out DIR``: instance-aware style
editing (paper §6.2) outside ComfyUI, on ``diffusers``.

Per image: segment (cartoonseg detector + optional refiner), optionally tag every instance (WD SwinV2 tagger),
then restyle instance by instance (:func:`cartoonseg.style.style_edit` with
:class:`cartoonseg.style.diffusers_backend.DiffusersBackend`). ``--compare`` also writes the global-prompt
baseline. Everything is loaded offline unless ``--allow-download`` is given (detector/refiner/tagger weights
only; diffusion models and their configs must be local, see :func:`~cartoonseg.style.diffusers_backend.load_components`).

Outputs per image: ``<stem>_style.png`` (or ``_global.png`` with ``--mode global``), ``<stem>_global.png``
with ``--compare``, ``<stem>_hint.png`` and ``<stem>_style.json`` (the passes: prompts, seeds, boxes), written under
the output policy of :mod:`cartoonseg.outputs` (``<stem>`` gets a path hash when two inputs share a stem; a rerun
replaces an image's earlier outputs as a group).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .. import outputs
from .._cli import (SkippedInputs, add_matting_option, area_main, check_matting, load_networks, matte_instances,
                   progress, quiet)
from .._diffusers import quiet_library_logs
from .._cli import seed as cli_seed
from ..io import read_image, to_float_image, write_image
from ..segmenter import check_settings
from .config import BACKGROUND_FILLS, DEFAULT_PRESET, MODES, PRESETS, style_preset
from .hints import HINT_TYPES, extract_hint
from .regions import ORDERS

__all__ = ["add_parsers", "main"]


def add_parsers(subparsers) -> None:
    """Register the ``style`` sub-command."""
    p = subparsers.add_parser("style", help="instance-aware style editing with diffusers (paper §6.2)")
    d = style_preset(DEFAULT_PRESET)

    def pre(field: str, what: str) -> str:  # options that override one field of --preset
        return f"{what} (default: the --preset's; {DEFAULT_PRESET}: {getattr(d, field)!r})"

    p.add_argument("images", nargs="+", help="input images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", required=True, help="SD1.5/SDXL: diffusers folder or single .safetensors")
    p.add_argument("--model-config", help="local diffusers config folder for a single-file --model")
    p.add_argument("--sdxl", action="store_true", help="the single-file --model is SDXL")
    p.add_argument("--controlnet", help="lineart (SD1.5) / canny (SDXL) ControlNet: folder or single file")
    p.add_argument("--controlnet-config", help="local diffusers config folder for a single-file --controlnet")
    p.add_argument("--detector", default="detector", help="detector weights (path or released name)")
    p.add_argument("--refiner", default="refiner", help="refiner weights, or 'none'")
    p.add_argument("--weights-dir", action="append", default=[],
                   help="folder searched for released weights (repeatable; default: ~/.cache/cartoonseg)")
    p.add_argument("--tagger", default="none", help="tagger folder or repo id, or 'none' (style prompt only)")
    p.add_argument("--allow-download", action="store_true", help="let missing detector/refiner/tagger download")
    p.add_argument("--score-thr", type=float, default=0.3, help="minimum detection score, 0..1")
    p.add_argument("--max-instances", type=int, default=100, help="keep at most this many instances per image")
    add_matting_option(p, "the restyled background is composited under the characters by their mattes, with "
                          "their estimated foreground colours (default: the binary union of the masks, as the "
                          "original)")
    p.add_argument("--background", help="clean plate image for the background pass (one for all inputs)")
    p.add_argument("--hint", dest="hint_image",
                   help="ControlNet hint image (white lines on black) instead of the built-in one")
    p.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help="settings of the paper's SD1.5 run or the original's SDXL canny run; options below override")
    p.add_argument("--style", dest="style_prompt", help="global style prompt, e.g. '3D pixar style'")
    p.add_argument("--negative", dest="negative_prompt", help=pre("negative_prompt", "negative prompt of every pass"))
    p.add_argument("--background-prompt", help=pre("background_prompt", "extra text for the background pass"))
    p.add_argument("--mode", choices=MODES,
                   help=pre("mode", "instance = the paper's method; global = one img2img with the style prompt"))
    p.add_argument("--compare", action="store_true", help="also write the global-prompt baseline")
    p.add_argument("--seed", type=cli_seed, help=pre("seed", "seed of every pass (the same for all instances)"))
    p.add_argument("--steps", type=int, help=pre("steps", "sampler steps per pass, 1..10000"))
    p.add_argument("--cfg", type=float, help=pre("cfg", "classifier-free guidance scale, 0..100"))
    p.add_argument("--sampler", choices=["dpmpp_2m", "dpmpp_2m_sde", "euler", "euler_ancestral", "ddim"],
                   help=pre("sampler", "sampler"))
    p.add_argument("--scheduler", choices=["karras", "normal"], help=pre("scheduler", "noise schedule"))
    p.add_argument("--denoise", type=float, help=pre("denoise", "img2img strength of each pass, 0..1"))
    p.add_argument("--control-strength", type=float, help=pre("control_strength", "ControlNet strength, 0..10"))
    p.add_argument("--hint-type", dest="hint_kind", choices=[*HINT_TYPES, "none"],
                   help=pre("hint", "built-in ControlNet hint when no --hint image is given"))
    p.add_argument("--crop-padding", type=int, help=pre("crop_padding", "context pixels around each instance, 0..8192"))
    p.add_argument("--mask-feather", type=float,
                   help=pre("mask_feather", "outward feather of the paste-back, 0..256 px"))
    p.add_argument("--resolution", type=int,
                   help=pre("resolution", "long side each crop is sampled at, 0..8192 (0 = native)"))
    p.add_argument("--iterations", type=int, help=pre("iterations", "rounds over all instances, 1..100"))
    p.add_argument("--order", choices=[o for o in ORDERS if o != "depth"],
                   help=pre("order", "paste-back order of the instances (auto = touching ones as the picture layers "
                                     "them, else bottom: the command has no per-instance depth; depth order is in "
                                     "the ComfyUI node, after Depth Pool)"))
    p.add_argument("--background-fill", choices=BACKGROUND_FILLS,
                   help=pre("background_fill", "how characters are removed before the background pass"))
    p.add_argument("--no-background", action="store_true", help="do not restyle the background")
    p.add_argument("--no-masked-denoise", action="store_true", help="plain img2img of each crop")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps, or auto (CUDA when present)")
    outputs.add_overwrite_argument(p)
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):
    fields = {f.name for f in dataclasses.fields(style_preset(args.preset))}
    over = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.hint_kind is not None:
        over["hint"] = args.hint_kind
    if args.no_background:
        over["background_as_instance"] = False
    if args.no_masked_denoise:
        over["masked_denoise"] = False
    return style_preset(args.preset, **over)


def run(args: argparse.Namespace) -> int:
    import cartoonseg

    from .diffusers_backend import DiffusersBackend, load_components, load_controlnet
    from .editor import count_passes, style_edit

    config = _config(args)
    images = [Path(p) for p in args.images]
    names = outputs.unique_names(images)
    inputs = [*images, *(p for p in (args.background, args.hint_image, args.model, args.controlnet, args.detector,
                                     args.refiner) if p)]
    check_settings(score_thr=args.score_thr, max_instances=args.max_instances)  # before any output or weights
    check_matting(args)
    # the images before any model loads (the SD model: minutes): unreadable ones skipped now, none usable an error
    skipped = SkippedInputs(len(images))
    skipped.check(images, read_image)
    background = to_float_image(read_image(args.background)) if args.background else None
    hint = to_float_image(read_image(args.hint_image)) if args.hint_image else None
    # checked before models load; a failure before the first write (weights, models) leaves no new empty folder
    with outputs.OutputFolder(args.out, inputs=inputs, overwrite=args.overwrite) as out:
        search = [Path(d) for d in args.weights_dir]
        det, ref = load_networks(args.detector, args.refiner, search_dirs=search, allow_download=args.allow_download,
                                 device=args.device)
        seg = cartoonseg.Segmenter(det, ref, score_thr=args.score_thr, max_instances=args.max_instances)
        tagger = None
        if args.tagger != "none":
            from ..tagger.tagging import load_tagger

            tagger = load_tagger(args.tagger, device=args.device, allow_download=args.allow_download)
        with quiet_library_logs(quiet(args)):  # -q: no transformers/diffusers notices while our models load
            components = load_components(args.model, config_dir=args.model_config, sdxl=args.sdxl)
            controlnet = (load_controlnet(args.controlnet, config_dir=args.controlnet_config) if args.controlnet
                          else None)

        for path, stem in zip(images, names):
            rgb = skipped.read(path, read_image)
            if rgb is None:
                continue
            image = to_float_image(rgb)
            instances = matte_instances(args, rgb, seg(rgb).to("cpu"), name=str(path))
            if tagger is not None:
                from ..tagger.tagging import tag_instances

                instances, _ = tag_instances(tagger, rgb, instances, tag_background=False)
            compare = args.compare and config.mode != "global"
            runs = [config] + ([dataclasses.replace(config, mode="global")] if compare else [])
            report = {"image": str(path), "instances": len(instances), "config": dataclasses.asdict(config), "runs": {}}
            for cfg in runs:
                backend = DiffusersBackend(components, cfg, controlnet=controlnet, device=args.device)
                with progress(count_passes(instances, cfg), f"{path.name} {cfg.mode}", quiet(args), unit="pass") as bar:
                    result = style_edit(image, instances, backend, cfg, background=background, hint_image=hint,
                                        use_control=controlnet is not None, progress=lambda: bar.update(1))
                name = "style" if cfg.mode == "instance" else "global"
                written = out.write(f"{stem}_{name}.png", write_image, result.image, group=stem)
                report["runs"][name] = [dataclasses.asdict(r) for r in result.passes]
                print(f"{path.name}: {name} ({len(result.passes)} passes) -> {written}")
            if hint is not None:
                out.write(f"{stem}_hint.png", write_image, hint, group=stem)
            elif config.hint != "none":
                out.write(f"{stem}_hint.png", write_image, extract_hint(image, config.hint), group=stem)
            out.write_json(f"{stem}_style.json", report, group=stem)
    # closed above: earlier outputs of these images that this run did not write (e.g. a _global.png) go
    skipped.finish()
    return 0


#: ``python -m cartoonseg.style ...`` with the error policy of :mod:`cartoonseg._cli`
main = area_main(add_parsers, __doc__)
