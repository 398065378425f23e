"""Benchmark: tagging one 448x448 crop with the full WD SwinV2 v3 architecture (98.0 M parameters, random weights;
speed does not depend on the values), preprocessing included.

    python bench/bench_tagger.py [--threads 1] [--repeat 3] [--precision fp32|bf16] [--device cpu] [--json out.json]

Reports median/best wall time and process CPU time per crop. For comparison, run the same crop through
transformers' ``Swinv2ForImageClassification`` on the same machine.
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
from _json_out import JSON_HELP, add_overwrite_argument, check_json, write_json  # noqa: E402  (bench/: --json FILE)
from cartoonseg.device import DTYPES, capabilities, resolve_precision  # noqa: E402
from cartoonseg.tagger import SWINV2_PRESETS, TagLabels, WDTagger, build_swinv2  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="the tiny SwinV2 preset at its own size (CI smoke run)")
    p.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(p)
    args = p.parse_args()
    check_json(args)  # a file that may not be written fails now, not after the run
    torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, args.device)  # bf16 on an AVX2-only CPU -> fp32 (warned)
    dtype = DTYPES[precision]
    cfg = SWINV2_PRESETS["tiny" if args.quick else "wd-v3"]
    labels = TagLabels(tuple(f"tag_{i}" for i in range(cfg.num_classes)), (9,) * 4 + (0,) * (cfg.num_classes - 4))
    tagger = WDTagger(build_swinv2(cfg).to(args.device, dtype).eval(), labels)
    side = cfg.img_size
    crop = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    tagger.tag(crop)  # warm-up
    walls, cpus = [], []
    for _ in range(args.repeat):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        tagger.tag(crop)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    result = {
        "preset": "tiny" if args.quick else "wd-v3", "crop": side, "threads": args.threads,
        "precision": precision, "requested_precision": args.precision, "device": args.device,
        "cpu": capabilities(args.device).description,
        "wall_median_s": statistics.median(walls), "wall_best_s": min(walls),
        "cpu_median_s": statistics.median(cpus), "cpu_best_s": min(cpus),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None,
    }
    print(json.dumps(result, indent=1))
    write_json(args, result)


if __name__ == "__main__":
    main()
