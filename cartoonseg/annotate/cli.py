"""``annotate`` command: label a whole image collection as one COCO file (resumable; many processes with torchrun).

Usage::

    python -m cartoonseg annotate IMAGES/ more.txt val.json --out annotations.json [--tagger DIR] [--per-image DIR]
    torchrun --nproc-per-node 8 -m cartoonseg annotate IMAGES/ --out annotations.json        # one process per GPU
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m cartoonseg annotate ...  # many nodes

Inputs are folders, ``.txt`` list files and COCO files (:mod:`cartoonseg.annotate.inputs`). Each rank segments its
shards of the (rank-0) input list and saves each shard atomically in ``<out>.parts/`` (``--work-dir``); rank 0 then
merges them into ``--out``. Run the same command again after an interruption: finished shards are not recomputed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._cli import add_rank_device_option, area_main, rank_device
from ..device import PRECISION_CHOICES
from ..tags import DEFAULT_CHARACTER_THRESHOLD, DEFAULT_GENERAL_THRESHOLD

__all__ = ["add_parsers", "run_annotate", "main"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image folders, .txt lists of images, COCO .json files or images")
    p.add_argument("--out", required=True, help="the COCO .json file to write")
    p.add_argument("--detector", default="detector", help="detector weights path, or 'detector' = the released rtmdetl_e60.ckpt")
    p.add_argument("--refiner", default="refiner", help="refiner weights path, released name, or 'none'")
    p.add_argument("--weights-dir", default=None,
                   help="folder holding the released files (searched first; downloads go there; "
                        "default: ~/.cache/cartoonseg)")
    p.add_argument("--no-download", action="store_true", help="never download weights")
    p.add_argument("--score-thr", type=float, default=0.3, help="keep detections with score > this (default 0.3)")
    p.add_argument("--mask-thr", type=float, default=None,
                   help="refined mask threshold (default: the one saved with the refiner, 0.3 for the released one)")
    p.add_argument("--det-size", type=int, default=640, help="detector canvas, multiple of 32 (default 640)")
    p.add_argument("--refine-size", type=int, default=None,
                   help="refiner canvas (default: the one saved with the refiner, 720 for the released one)")
    p.add_argument("--max-instances", type=int, default=100, help="at most this many instances per image")
    p.add_argument("--precision", choices=list(PRECISION_CHOICES), default="fp32",
                   help="compute precision; auto = the fastest this device runs natively (default fp32)")
    p.add_argument("--exact", action="store_true", help="the original op order (bit-exact, slower) instead of the fast path")
    p.add_argument("--grey", action="store_true",
                   help="convert every image to grey (and back to 3 channels) before segmenting and tagging: manga, line art")
    p.add_argument("--tagger", default=None, help="tag every instance with this WD tagger (folder or repo id)")
    p.add_argument("--general-threshold", type=float, default=DEFAULT_GENERAL_THRESHOLD,
                   help="tagger general-tag threshold")
    p.add_argument("--character-threshold", type=float, default=DEFAULT_CHARACTER_THRESHOLD,
                   help="tagger character-tag threshold")
    p.add_argument("--per-image", default=None, metavar="DIR",
                   help="also write per-image results (instances.json, mask_NNN.png, overlay.png) under DIR/<name>/")
    p.add_argument("--matting", action="store_true",
                   help="with --per-image: also alpha mattes and RGBA cut-outs per instance (pip install 'cartoonseg[matting]')")
    p.add_argument("--image-root", default=None,
                   help="folder the COCO inputs' file_name entries are relative to (default: the COCO file's folder); "
                        "other images get file_name relative to it when they lie below it")
    p.add_argument("--recursive", action="store_true", help="also take images from sub-folders of input folders")
    p.add_argument("--work-dir", default=None, help="run folder for the shards (default: <out>.parts); shared by all ranks; "
                        "--out may not lie inside it")
    p.add_argument("--shard-size", type=int, default=16, help="images per shard, the unit redone after a kill (default 16)")
    p.add_argument("--keep-shards", action="store_true", help="keep the run's shard files after the merge "
                   "(otherwise only the run's own files are deleted, and the folder when the run created it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out, and write into a --per-image folder, even if another program wrote them "
                        "(inputs are never overwritten; foreign files are replaced only by outputs of the same name)")
    add_rank_device_option(p, default="auto", help="auto (cuda:LOCAL_RANK when CUDA is available, else cpu), cpu, "
                           "cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: torch's; torchrun sets 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages")


def add_parsers(subparsers) -> None:
    """Register ``annotate`` on the package CLI's sub-parsers."""
    p = subparsers.add_parser("annotate", help="segment an image collection into one COCO file (resumable, torchrun)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=run_annotate)


def _weights_identity(path) -> dict:
    """What identifies a weights file in the run's settings (and so in the work folder's fingerprint): its name and
    its content's SHA-256. Name and size alone let a resume mix two models: a retrained checkpoint of the same
    network has the same size. No path or time stamp, so ranks on other nodes holding copies agree."""
    from ..hub import sha256_of

    p = Path(path)
    if not p.is_file():
        return {"name": str(path)}
    return {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_of(p)}


def _tagger_identity(folder) -> dict:
    """The tagger's files by content (as :func:`_weights_identity`): two folders of one name, or a folder whose
    weights or tag list changed, are different taggers to a resume."""
    from ..hub import sha256_of

    folder = Path(folder)
    files = [name for name in ("model.safetensors", "selected_tags.csv", "config.json") if (folder / name).is_file()]
    return {"files": {name: sha256_of(folder / name) for name in files}}


def _check_readable(items) -> None:
    """Before the weights are resolved (maybe downloaded) and loaded: raise ``ValueError`` when no input image can be
    read. Images are read in order up to the first readable one (usually the first: one decode), so a run whose
    inputs are all unreadable (a lone truncated or animated file, a list of moved files) fails in a moment instead
    of after the models load; unreadable images among readable ones stay the run's business (listed under
    ``info.skipped``, not fatal)."""
    from ..io import read_image

    first = None
    for item in items:
        try:
            read_image(item.path)
            return
        except ValueError as exc:
            first = first or (item.file_name, exc)
    if first is not None:
        raise ValueError(f"none of the {len(items)} input image(s) could be read ({first[0]}: {first[1]}); "
                         "nothing was loaded or written")


def run_annotate(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import load_detector, load_refiner
    from ..hub import resolve_weights
    from ..segmenter import Segmenter, check_settings
    from ..sharding import every_rank, init_distributed
    from .inputs import collect_inputs
    from .per_image import PerImageWriter
    from .run import annotate, default_work_dir, shared_items

    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {args.shard_size}")
    if args.threads is not None and not 1 <= args.threads <= 1024:
        raise ValueError(f"--threads must lie in [1, 1024] (leave it out for torch's default), got {args.threads}")
    if args.matting and not args.per_image:
        raise ValueError("--matting writes alpha mattes into the per-image folders: add --per-image DIR")
    if args.matting:
        from ..matting import check_available

        check_available()  # before the models load
    check_settings(det_size=args.det_size, score_thr=args.score_thr, mask_thr=args.mask_thr,
                   refine_size=args.refine_size, max_instances=args.max_instances)  # before weights load
    rank = init_distributed()
    if args.threads:
        torch.set_num_threads(int(args.threads))
    own = [p for p in (args.per_image, args.work_dir) if p]  # walked folders never yield the run's own outputs
    items = shared_items(lambda: collect_inputs(args.inputs, image_root=args.image_root, recursive=args.recursive,
                                                exclude=own), rank)  # rank 0 collects; its error ends every rank

    def load():
        """What every rank does itself, reading its node's files: the images' readability, its device, the weights
        (maybe downloaded), the tagger."""
        _check_readable(items)
        device = rank_device(args.device, rank.local_rank)  # cuda: this rank's GPU, if the node has it
        search = [Path(args.weights_dir)] if args.weights_dir else []
        det_path = resolve_weights(args.detector, search_dirs=search, allow_download=not args.no_download)
        ref_path = None
        if args.refiner and str(args.refiner).lower() != "none":
            ref_path = resolve_weights(args.refiner, search_dirs=search, allow_download=not args.no_download)
        detector = load_detector(det_path, device=device)
        refiner = load_refiner(ref_path, device=device) if ref_path is not None else None
        seg = Segmenter(detector, refiner, det_size=args.det_size, score_thr=args.score_thr, mask_thr=args.mask_thr,
                        refine_size=args.refine_size, max_instances=args.max_instances, precision=args.precision,
                        fuse=not args.exact, channels_last=not args.exact, grey=args.grey)
        tagger = tagger_files = None
        if args.tagger:
            from ..tagger import load_tagger, resolve_tagger_dir

            tagger = load_tagger(args.tagger, device=device, allow_download=not args.no_download)
            tagger_files = resolve_tagger_dir(args.tagger, allow_download=False)  # what load_tagger read
        return det_path, ref_path, seg, tagger, tagger_files

    # on per-node storage one rank's weights (or images) can be missing or damaged: every rank does these steps,
    # then all agree, so such a rank ends every rank at once with one "error: rank N: ..." line (every_rank)
    # instead of leaving the others waiting for its shards
    det_path, ref_path, seg, tagger, tagger_files = every_rank(load, rank)
    mask_thr = seg.result_mask_thr  # the threshold the written masks use (recorded in the settings)
    settings = {
        "detector": _weights_identity(det_path), "refiner": _weights_identity(ref_path) if ref_path else None,
        "score_thr": args.score_thr, "mask_thr": mask_thr, "det_size": args.det_size,
        "refine_size": seg.refine_size, "max_instances": args.max_instances,
        "precision": seg.effective_precision,  # what runs here (auto and bf16 differ between CPUs): resumes must match
        "exact": bool(args.exact), "grey": bool(args.grey),
        "tagger": {"source": Path(args.tagger).name, **_tagger_identity(tagger_files),
                   "general_threshold": args.general_threshold,
                   "character_threshold": args.character_threshold} if args.tagger else None,
        "per_image": bool(args.per_image), "matting": bool(args.matting),
    }

    def segment(rgb):
        instances = seg(rgb)
        if tagger is not None and len(instances):
            from ..tagger import tag_instances
            from ..transforms import grey_rgb

            instances, _ = tag_instances(tagger, grey_rgb(rgb) if args.grey else rgb, instances,
                                         general_threshold=args.general_threshold,
                                         character_threshold=args.character_threshold, tag_background=False)
        if args.matting and len(instances):
            from ..matting import instance_alphas

            instances = instance_alphas(rgb, instances)
        return instances

    inputs = [it.path for it in items] + [str(s) for s in args.inputs if os.path.isfile(s)]
    work_dir = args.work_dir if args.work_dir is not None else default_work_dir(args.out)
    per_image = (PerImageWriter(args.per_image, items, inputs=inputs, overwrite=args.overwrite,
                                outside=[args.out, work_dir]) if args.per_image else None)
    quiet = bool(args.quiet)
    coco = annotate(segment, items, args.out, settings=settings, work_dir=args.work_dir, shard_size=args.shard_size,
                    per_image=per_image, rank=rank, progress=not quiet, keep_shards=args.keep_shards, inputs=inputs,
                    overwrite=args.overwrite,
                    log=(lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr)))
    if coco is not None and items and len(coco["info"]["skipped"]) == len(items):  # some unreadable: not fatal
        first = coco["info"]["skipped"][0]
        raise ValueError(f"none of the {len(items)} input image(s) could be read ({first['file_name']}: "
                         f"{first.get('error', 'unreadable')}); {args.out} lists them under info.skipped")
    return 0


#: ``python -m cartoonseg.annotate ...`` with the error policy of :mod:`cartoonseg._cli`
main = area_main(add_parsers, __doc__)
