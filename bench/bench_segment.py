"""Benchmark: one 720x720 image through the released architecture (RTMDet-Ins-L @640 + IS-Net @720 on 3
instances) on this machine, with random weights (speed does not depend on the values).

    python bench/bench_segment.py [--threads 2] [--repeat 3] [--precision fp32|bf16] [--device cpu] [--json out.json]

Reports the median and best wall time of each stage and of the whole call. Compare with
../shared/docs/performance_anchors.md §1.1 (≈0.7–1.5 s detector, ≈0.45–0.51 s per refined instance fp32, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cartoonseg  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    det = cartoonseg.build_detector("l").to(args.device)
    ref = cartoonseg.build_refiner("isnet").to(args.device)
    seg = cartoonseg.Segmenter(det, ref, score_thr=0.0, max_instances=3, precision=args.precision)
    image = (np.random.default_rng(0).random((720, 720, 3)) * 255).astype(np.uint8)
    seg(image)  # warm-up
    det_t, ref_t, tot_t = [], [], []
    for _ in range(args.repeat):
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        t0 = time.perf_counter()
        coarse = seg.detect(image)
        sync()
        t1 = time.perf_counter()
        seg.refine(image, coarse)
        sync()
        t2 = time.perf_counter()
        det_t.append(t1 - t0)
        ref_t.append(t2 - t1)
        tot_t.append(t2 - t0)
    result = {
        "image": "720x720", "instances": len(coarse), "threads": args.threads, "precision": args.precision,
        "device": args.device, "torch": torch.__version__,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None,
        "detector_s": {"median": statistics.median(det_t), "best": min(det_t)},
        "refiner_3_instances_s": {"median": statistics.median(ref_t), "best": min(ref_t)},
        "total_s": {"median": statistics.median(tot_t), "best": min(tot_t)},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
