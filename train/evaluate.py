"""Box AP, Mask AP and Boundary AP of cartoon instance segmentation (arXiv 2312.01943 §5, Tables 1-2).

    python -m train.evaluate --gt GT.json --pred PRED.json
    python -m train.evaluate --gt GT.json --images DIR --detector P [--refiner P] [--save-pred FILE]
    torchrun --nproc-per-node N -m train.evaluate --gt GT.json --images DIR --detector P --work-dir DIR

Prints one JSON object with ``bbox_AP``, ``segm_AP``, ``boundary_AP`` and their ``_AP50`` / ``_AP75`` (plus
APs/APm/APl and AR). ``PRED.json`` is a COCO results list (``image_id``, ``category_id``, ``score``, ``bbox`` xywh,
``segmentation`` RLE). With ``--refiner`` the report has ``stage1`` (the paper's "w/o 2nd stage" ablation) and
``refined`` sections from one detector pass. Evaluation follows the COCO protocol (pycocotools semantics;
segm/boundary area ranges from mask areas) and Boundary IoU with dilation ratio 0.02.

Under ``torchrun`` every process predicts its shards of the images (``cartoonseg.sharding``: atomic shard files in
``--work-dir``, a killed run resumes with any number of processes) and rank 0 merges, evaluates and prints. With
``--pred`` there is nothing to share out: rank 0 alone reads, evaluates and prints, and every process ends with its
result or its error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cartoonseg import outputs
from cartoonseg._cli import add_rank_device_option
from cartoonseg.config import MAX_CANVAS
from cartoonseg.evaluation import EvalParams, evaluate_all

from ._cli import check_option, check_same_annotations, parser, script_main

#: what ``--types`` may list
TYPES = ("bbox", "segm", "boundary")


def _load_json(path: str) -> object:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def _summary(gt: dict, dets: list, params: EvalParams, types: list[str]) -> dict:
    return {k: round(v, 6) for k, v in evaluate_all(gt, dets, types, params).items()}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m train.evaluate``."""
    ap = parser("train.evaluate", __doc__)
    ap.add_argument("--gt", required=True, help="COCO ground-truth JSON")
    ap.add_argument("--pred", default=None,
                    help="COCO results JSON (RLE masks), or what --save-pred wrote for a two-stage run")
    ap.add_argument("--images", default=None, help="image folder of the ground truth (to run the models)")
    ap.add_argument("--detector", default=None, help="detector weights (any format cartoonseg.load_detector reads)")
    ap.add_argument("--refiner", default=None, help="refiner weights (optional; none: no refiner)")
    ap.add_argument("--det-size", type=int, default=None,
                    help=f"detector canvas, a multiple of 32 in [32, {MAX_CANVAS}] (default: the checkpoint's)")
    ap.add_argument("--score-thr", type=float, default=0.05, help="keep detections above this score, in [0, 1]")
    ap.add_argument("--mask-thr", type=float, default=None,
                    help="mask probability threshold, 0..1 (default: the refiner's, 0.3; without --refiner the "
                         "detector's 0.5 unless given)")
    ap.add_argument("--max-dets", type=int, default=100, help="detections per image, >= 1")
    ap.add_argument("--dilation-ratio", type=float, default=0.02,
                    help="boundary width / diagonal, in [0, 1] (at least 1 px)")
    ap.add_argument("--types", default="bbox,segm,boundary", help="comma list of bbox, segm, boundary")
    add_rank_device_option(ap, default="cpu",
                           help="device for the models (cpu, cuda, cuda:N; under torchrun cuda = cuda:LOCAL_RANK)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="autocast precision")
    ap.add_argument("--save-pred", default=None,
                    help="write the predictions here: a COCO results list, or with --refiner "
                         "{\"stage1\": [...], \"refined\": [...]} (which --pred reads back; refused with --pred)")
    ap.add_argument("--batch-size", type=int, default=1,
                    help="images per detector pass, >= 1 (1: bit-identical to one image at a time; more helps on "
                    "GPUs)")
    ap.add_argument("--work-dir", default=None,
                    help="shard folder all ranks share (resumable; default under torchrun with several processes: "
                    "SAVE_PRED.shards, or GT.shards)")
    ap.add_argument("--shard-size", type=int, default=16, help="images per shard with --work-dir, >= 1")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads per process, >= 1 (default: torch's)")
    outputs.add_overwrite_argument(ap)
    return ap


def _check_args(args: argparse.Namespace) -> list[str]:
    """Range-check the options before anything is read or loaded (``ValueError`` naming the option); returns the
    metric types of ``--types``."""
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    unknown = [t for t in types if t not in TYPES]
    if not types or unknown:
        raise ValueError(f"--types must list one or more of {', '.join(TYPES)} (comma-separated), got {args.types!r}")
    check_option("--score-thr", args.score_thr, 0, 1)
    check_option("--mask-thr", args.mask_thr, 0, 1)
    check_option("--max-dets", args.max_dets, 1)
    check_option("--dilation-ratio", args.dilation_ratio, 0, 1)
    check_option("--batch-size", args.batch_size, 1)
    check_option("--shard-size", args.shard_size, 1)
    check_option("--threads", args.threads, 1)
    if args.det_size is not None and (args.det_size % 32 or not 32 <= args.det_size <= MAX_CANVAS):
        raise ValueError(f"--det-size must be a multiple of 32 in [32, {MAX_CANVAS}], got {args.det_size}")
    return types


def _run(args: argparse.Namespace) -> int:
    types = _check_args(args)
    if args.refiner is not None and args.refiner.strip().lower() in ("", "none"):
        args.refiner = None  # "none" means no refiner, as for every cartoonseg command
    if args.pred and args.save_pred:  # it was accepted and nothing was written
        raise ValueError(f"--save-pred writes the predictions the models make; with --pred they are already in "
                         f"{args.pred}: leave out --save-pred")
    if not args.pred and not (args.images and args.detector):
        raise ValueError("give --pred, or --images and --detector to run the models")
    inputs = [p for p in (args.gt, args.pred, args.detector, args.refiner) if p]
    # AP uses the last entry: --max-dets itself, also below 10 (AR is reported at 1 and 10 where those are smaller)
    max_dets = tuple(sorted({m for m in (1, 10) if m < args.max_dets} | {args.max_dets}))
    params = EvalParams(max_dets=max_dets, dilation_ratio=args.dilation_ratio)
    from cartoonseg.sharding import agree, agree_on, check_outside, every_rank, init_distributed

    # under torchrun the group first, so that a rank failing below reaches every rank (a rank that failed before
    # it left the others in init_process_group until its time-out)
    rank = init_distributed()
    if args.pred:
        # nothing to share out: rank 0 reads and evaluates, every rank ends with its report (printed once) or its
        # error (each rank used to read the files and print the report itself)
        report = agree_on(lambda: _evaluate_pred(args, params, types), rank)
        if rank.is_main:
            print(json.dumps(report, sort_keys=True))
        return 0
    if args.save_pred:
        # never over the ground truth or another file cartoonseg did not write; rank 0 writes it, so rank 0 checks
        # (its refusal ends every rank)
        agree_on(lambda: outputs.check_file(args.save_pred, inputs=inputs, overwrite=args.overwrite), rank)
    import torch

    import cartoonseg
    from cartoonseg.evaluation.predict import predict_coco
    from cartoonseg._cli import rank_device
    work_dir = args.work_dir or (f"{args.save_pred or args.gt}.shards" if rank.world_size > 1 else None)
    if work_dir is not None and args.save_pred:
        check_outside(work_dir, args.save_pred)  # the run folder holds only the run's own files
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    def load():
        """What every rank does itself, reading its node's files: on any rank's failure every rank ends at once
        with one "error: rank N: ..." line (every_rank) instead of the others waiting for its shards."""
        gt = _load_json(args.gt)
        if not Path(args.images).is_dir():
            raise FileNotFoundError(f"--images {args.images}: no such folder")
        device = rank_device(args.device, rank.local_rank)  # cuda: this process's GPU, if the node has it
        det = cartoonseg.load_detector(args.detector, device=device)
        ref = cartoonseg.load_refiner(args.refiner, device=device) if args.refiner is not None else None
        seg = cartoonseg.Segmenter(det, ref, det_size=args.det_size, score_thr=args.score_thr, mask_thr=args.mask_thr,
                                   max_instances=args.max_dets, precision=args.precision)
        return gt, ref, seg

    gt, ref, seg = every_rank(load, rank)
    check_same_annotations(args.gt, rank, "--gt")  # the shards are of rank 0's image list
    fingerprint = {k: getattr(args, k) for k in ("detector", "refiner", "det_size", "score_thr", "mask_thr",
                                                  "max_dets", "batch_size")}
    fingerprint["precision"] = seg.effective_precision  # what runs here: auto/bf16 differ between CPUs
    for key in ("detector", "refiner"):
        if fingerprint[key] and Path(fingerprint[key]).is_file():
            st = Path(fingerprint[key]).stat()
            fingerprint[key] = [str(Path(fingerprint[key]).resolve()), st.st_size, st.st_mtime_ns]
    # rank 0's describes the run: every rank writes or checks the same manifest (per-node copies of the weights
    # differ in time stamp, and the precision between CPUs; the rank that lost the race was refused alone)
    fingerprint = agree(fingerprint)
    preds = predict_coco(
        seg, gt, args.images, stages="both" if ref is not None else "final", progress=sys.stderr.isatty(),
        batch_size=args.batch_size, work_dir=work_dir, shard_size=args.shard_size, fingerprint=fingerprint,
    )
    if preds is None:  # another rank merges and reports
        return 0
    if args.save_pred:
        outputs.write_json(args.save_pred, preds if ref is not None else preds["final"], indent=None, inputs=inputs,
                           overwrite=args.overwrite)
    report = _summary(gt, preds["final"], params, types) if ref is None else _report(gt, preds, params, types)
    print(json.dumps(report, sort_keys=True))
    return 0


def _evaluate_pred(args: argparse.Namespace, params: EvalParams, types: list[str]) -> dict:
    """The report of ``--pred`` (a COCO results list, or ``--save-pred``'s two-stage dict) against ``--gt``."""
    gt = _load_json(args.gt)
    dets = _load_json(args.pred)
    if isinstance(dets, dict) and set(dets) == {"stage1", "refined"} and all(isinstance(v, list)
                                                                            for v in dets.values()):
        return _report(gt, dets, params, types)  # --save-pred of a two-stage run
    if not isinstance(dets, list):
        raise ValueError(f"{args.pred} must hold a COCO results list (or --save-pred's "
                         "{\"stage1\": [...], \"refined\": [...]})")
    return _summary(gt, dets, params, types)


def _report(gt, preds: dict, params, types) -> dict:
    """Metrics of both stages (``{"stage1": {...}, "refined": {...}}``), the refined ones also at the top level."""
    report = {name: _summary(gt, dets, params, types) for name, dets in preds.items()}
    report.update(report["refined"])
    return report


#: ``python -m train.evaluate ...``: bad options and input are one "error:" line, status 2
main = script_main(build_parser, _run)


if __name__ == "__main__":
    raise SystemExit(main())
