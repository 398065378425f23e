"""Benchmark: evaluation throughput (prediction dump and COCO AP) of a detector on a COCO set.

    python bench/bench_eval.py [--gt GT.json --images DIR] [--detector P] [--size 256] [--threads 2] [--num 40]

Without ``--gt`` it synthesises ``--num`` 256² images from procedural fixtures in a temporary folder; without
``--detector`` it uses a randomly initialised tiny detector whose class bias makes it return many detections
(the slow case for mask decoding and matching). Reports images/s of

* the network alone (the forward pass of the fused inference copy, one letterboxed image at a time),
* the reference path (``Segmenter.__call__`` one image at a time + per-image COCO results),
* ``predict_coco`` (the fast dump; batch 1, which equals the reference bit for bit, and ``--batch``),
* ``evaluate_all`` (Box + Mask + Boundary AP),

and checks that the fast dump's APs equal the reference's. Sets ``OMP_WAIT_POLICY=PASSIVE`` unless set.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _json_out import JSON_HELP, add_overwrite_argument, check_json, write_json  # noqa: E402  (bench/: --json FILE)
import cartoonseg
from cartoonseg.config import detector_config
from cartoonseg.evaluation import evaluate_all
from cartoonseg.evaluation.predict import instances_to_results, predict_coco


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", default=None, help="COCO ground truth (default: synthesise --num images)")
    ap.add_argument("--images", default=None, help="image folder of --gt")
    ap.add_argument("--detector", default=None, help="detector weights (default: random tiny, many detections)")
    ap.add_argument("--size", type=int, default=256, help="detector canvas (256)")
    ap.add_argument("--num", type=int, default=40, help="synthetic images without --gt (40)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    ap.add_argument("--batch", type=int, default=4, help="batched dump size to time as well (4)")
    ap.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(ap)
    args = ap.parse_args(argv)
    check_json(args)  # a file that may not be written fails now, not after the run
    torch.set_num_threads(args.threads)
    tmp = None
    if args.gt is None:
        from cartoonseg.data.fixtures import make_fixtures
        from cartoonseg.data.synthesis import SynthesisConfig, synthesize_dataset

        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
        make_fixtures(root / "fix", 30, 6, seed=0)
        res = synthesize_dataset(root / "fix" / "fg", root / "fix" / "bg", root / "data", args.num,
                                 SynthesisConfig(size=256, split="val"), seed=1, progress=False)
        args.gt, args.images = res["annotations"], str(root / "data" / "val")
    gt = json.loads(Path(args.gt).read_text(encoding="utf-8"))
    if args.detector:
        det = cartoonseg.load_detector(args.detector)
    else:
        torch.manual_seed(0)
        det = cartoonseg.build_detector(detector_config("tiny", num_classes=len(gt["categories"]) or 1))
        for conv in det.bbox_head.rtm_cls:
            torch.nn.init.constant_(conv.bias, 0.5)
    seg = cartoonseg.Segmenter(det.eval(), det_size=args.size, score_thr=0.05, max_instances=100)
    n = len(gt["images"])
    cats = sorted(int(c["id"]) for c in gt.get("categories", [])) or [0]
    predict_coco(seg, {"images": gt["images"][:1], "categories": gt.get("categories", [])}, args.images)  # warm-up
    load0 = os.getloadavg()[0]

    from cartoonseg.transforms import letterbox

    canvases = [letterbox(cv2.imread(str(Path(args.images) / im["file_name"])), args.size)[0] for im in gt["images"]]
    net = seg._infer(det)
    t = time.perf_counter()
    with torch.no_grad():
        for c in canvases:
            net(seg._layout(det.normalize(c[None])))
    t_net = time.perf_counter() - t

    t = time.perf_counter()
    ref = []
    for im in gt["images"]:
        bgr = cv2.imread(str(Path(args.images) / im["file_name"]))
        ref += instances_to_results(seg(np.ascontiguousarray(bgr[:, :, ::-1])), im["id"], cats)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    fast = predict_coco(seg, gt, args.images)["final"]
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    batched = predict_coco(seg, gt, args.images, batch_size=args.batch)["final"]
    t_batch = time.perf_counter() - t
    t = time.perf_counter()
    ap_fast = evaluate_all(gt, fast)
    t_eval = time.perf_counter() - t
    ap_ref = evaluate_all(gt, ref)
    ap_batch = evaluate_all(gt, batched)
    out = {
        "images": n,
        "detections_per_image": round(len(fast) / max(n, 1), 1),
        "size": args.size,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "load1": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "network_only_img_per_s": round(n / t_net, 2),
        "reference_img_per_s": round(n / t_ref, 2),
        "dump_img_per_s": round(n / t_fast, 2),
        f"dump_batch{args.batch}_img_per_s": round(n / t_batch, 2),
        "evaluate_img_per_s": round(n / t_eval, 2),
        "dump_plus_evaluate_img_per_s": round(n / (t_fast + t_eval), 2),
        "dump_equals_reference": fast == ref,
        "max_ap_diff_vs_reference": max(abs(ap_fast[k] - ap_ref[k]) for k in ap_ref),
        f"max_ap_diff_batch{args.batch}": max(abs(ap_batch[k] - ap_ref[k]) for k in ap_ref),
        "bbox_AP50": round(ap_fast["bbox_AP50"], 4),
        "segm_AP50": round(ap_fast["segm_AP50"], 4),
    }
    print(json.dumps(out, indent=1))
    write_json(args, out)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
