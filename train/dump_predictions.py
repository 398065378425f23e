"""Attach stage-1 predictions (``pred_segmentations``) to a COCO training set for refiner training.

    python -m train.dump_predictions --data GT.json|DIR --detector P --out OUT.json [--images DIR]

Runs the detector (score > 0.3) on every image and attaches to each ground truth the predictions with mask
IoU > 0.5 (or the best overlapping one). Image paths in OUT.json stay relative to the original image folder, so
pass ``--images`` to ``train.train_refiner`` when OUT.json is written elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys

from cartoonseg import outputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.dump_predictions", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="COCO JSON or dataset folder")
    ap.add_argument("--split", default="train", help="split name used to find the JSON in DIR/annotations")
    ap.add_argument("--images", default=None, help="image folder (default: found next to the JSON)")
    ap.add_argument("--detector", required=True, help="stage-1 weights")
    ap.add_argument("--out", required=True, help="output COCO JSON with pred_segmentations")
    ap.add_argument("--score-thr", type=float, default=0.3, help="detection score threshold (0.3)")
    ap.add_argument("--iou-thr", type=float, default=0.5, help="attach predictions above this mask IoU (0.5)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    outputs.add_overwrite_argument(ap)
    args = ap.parse_args(argv)
    import cartoonseg
    from cartoonseg.training.coco import find_annotation, load_coco
    from cartoonseg.training.predictions import attach_predictions

    ann = find_annotation(args.data, args.split)
    inputs = [ann, args.detector]
    try:  # never over the ground truth (``--out GT.json``) or another file cartoonseg did not write
        outputs.check_file(args.out, inputs=inputs, overwrite=args.overwrite)
    except outputs.OutputError as exc:
        ap.error(str(exc))
    coco = load_coco(ann, args.images)
    root = coco.image_root
    seg = cartoonseg.Segmenter(cartoonseg.load_detector(args.detector, device=args.device), score_thr=args.score_thr)
    out = attach_predictions(seg, coco.raw, root, args.iou_thr, progress=sys.stderr.isatty())
    outputs.write_json(args.out, out, indent=None, inputs=inputs, overwrite=args.overwrite)
    n = sum(len(a.get("pred_segmentations", [])) for a in out["annotations"])
    print(json.dumps({"out": args.out, "annotations": len(out["annotations"]), "attached": n}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
