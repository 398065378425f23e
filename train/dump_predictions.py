"""Attach stage-1 predictions (``pred_segmentations``) to a COCO training set for refiner training.

    python -m train.dump_predictions --data GT.json|DIR --detector P --out OUT.json [--images DIR]
    torchrun --nproc-per-node N -m train.dump_predictions ... --work-dir DIR

Runs the detector (score > 0.3) on every image and attaches to each ground truth the predictions with mask
IoU > 0.5 (or the best overlapping one). Image paths in OUT.json stay relative to the original image folder, so
pass ``--images`` to ``train.train_refiner`` when OUT.json is written elsewhere. Under ``torchrun`` each process
takes its shards of the images (``cartoonseg.sharding``, resumable through ``--work-dir``) and rank 0 writes OUT.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cartoonseg import outputs
from cartoonseg._cli import add_rank_device_option

from ._cli import check_option, check_same_annotations, parser, script_main


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m train.dump_predictions``."""
    ap = parser("train.dump_predictions", __doc__)
    ap.add_argument("--data", required=True, help="COCO JSON or dataset folder")
    ap.add_argument("--split", default="train", help="split name used to find the JSON in DIR/annotations")
    ap.add_argument("--images", default=None, help="image folder (default: found next to the JSON)")
    ap.add_argument("--detector", required=True, help="stage-1 weights")
    ap.add_argument("--out", required=True, help="output COCO JSON with pred_segmentations")
    ap.add_argument("--score-thr", type=float, default=0.3, help="detection score threshold, in [0, 1]")
    ap.add_argument("--iou-thr", type=float, default=0.5, help="attach predictions above this mask IoU, in [0, 1]")
    add_rank_device_option(ap, default="cpu", help="cpu, cuda or cuda:N (under torchrun cuda = cuda:LOCAL_RANK)")
    ap.add_argument("--batch-size", type=int, default=1, help="images per detector pass, >= 1")
    ap.add_argument("--work-dir", default=None,
                    help="shard folder (resumable; default OUT.json.shards under torchrun with several processes)")
    ap.add_argument("--shard-size", type=int, default=16, help="images per shard, >= 1")
    outputs.add_overwrite_argument(ap)
    return ap


def _run(args: argparse.Namespace) -> int:
    check_option("--score-thr", args.score_thr, 0, 1)
    check_option("--iou-thr", args.iou_thr, 0, 1)
    check_option("--batch-size", args.batch_size, 1)
    check_option("--shard-size", args.shard_size, 1)
    import cartoonseg
    from cartoonseg._cli import rank_device
    from cartoonseg.sharding import agree, agree_on, check_outside, every_rank, init_distributed
    from cartoonseg.training.coco import find_annotation, load_coco
    from cartoonseg.training.predictions import attach_predictions

    rank = init_distributed()  # under torchrun the group first, so that a rank failing below reaches every rank
    work_dir = args.work_dir or (f"{args.out}.shards" if rank.world_size > 1 else None)

    def load():
        """What every rank does itself, reading its node's files: on any rank's failure every rank ends at once
        with one "error: rank N: ..." line (every_rank) instead of the others waiting for its shards."""
        device = rank_device(args.device, rank.local_rank)  # cuda: this process's GPU, if the node has it
        coco = load_coco(ann, args.images)
        seg = cartoonseg.Segmenter(cartoonseg.load_detector(args.detector, device=device), score_thr=args.score_thr)
        return coco, seg

    ann = every_rank(lambda: find_annotation(args.data, args.split), rank)
    inputs = [ann, args.detector]

    def check_out():
        """Never over the ground truth (``--out GT.json``) or another file cartoonseg did not write, nor among the
        run's shard files. Rank 0 alone writes --out, so rank 0's node decides (agree_on: its refusal ends every
        rank); a file at that path on another node only is not this run's business."""
        if work_dir is not None:
            check_outside(work_dir, args.out)
        outputs.check_file(args.out, inputs=inputs, overwrite=args.overwrite)

    agree_on(check_out, rank)  # before any work
    coco, seg = every_rank(load, rank)
    check_same_annotations(ann, rank)  # the shards are of rank 0's image list
    root = coco.image_root
    det = Path(args.detector)
    fingerprint = {"detector": [str(det.resolve()), det.stat().st_size, det.stat().st_mtime_ns] if det.is_file()
                   else args.detector, "score_thr": args.score_thr, "batch_size": args.batch_size, "data": str(ann)}
    # rank 0's describes the run: every rank writes or checks the same manifest (per-node copies of the weights
    # differ in time stamp; the rank that lost the race was refused alone)
    fingerprint = agree(fingerprint)
    out = attach_predictions(seg, coco.raw, root, args.iou_thr, progress=sys.stderr.isatty(),
                             batch_size=args.batch_size, work_dir=work_dir, shard_size=args.shard_size,
                             fingerprint=fingerprint)
    if out is None:  # rank 0 merges and writes
        return 0
    outputs.write_json(args.out, out, indent=None, inputs=inputs, overwrite=args.overwrite)
    n = sum(len(a.get("pred_segmentations", [])) for a in out["annotations"])
    print(json.dumps({"out": args.out, "annotations": len(out["annotations"]), "attached": n}))
    return 0


#: ``python -m train.dump_predictions ...``: bad options and input are one "error:" line, status 2
main = script_main(build_parser, _run)


if __name__ == "__main__":
    raise SystemExit(main())
