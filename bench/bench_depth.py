"""Benchmark: relative depth of one image with the Depth Anything V2-Small architecture (DINOv2-S/14 + DPT head,
24.8 M parameters, random weights: speed does not depend on the values) through cartoonseg.depth.DepthEstimator,
pre- and post-processing included.

    python bench/bench_depth.py [--threads 2] [--repeat 3] [--size 720] [--precision fp32|bf16] [--json out.json]

The network sees the image at 518 px on the short side (the processor rule).
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
from cartoonseg.depth import DepthEstimator  # noqa: E402
from cartoonseg.device import DTYPES, capabilities, resolve_precision  # noqa: E402


def v2_small(quick: bool = False) -> torch.nn.Module:
    """Depth Anything V2-Small's published shape (``quick``: a 2-layer, 64-wide stand-in for CI)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    if quick:
        backbone = Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128,
                                patch_size=14, image_size=518, out_features=["stage1", "stage2", "stage3", "stage4"],
                                reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=64,
                                  neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=16, head_hidden_size=8)
    else:
        backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                                patch_size=14, image_size=518, out_indices=[3, 6, 9, 12],
                                reshape_hidden_states=False, layerscale_value=1.0)
        cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384,
                                  neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64, head_hidden_size=32)
    return DepthAnythingForDepthEstimation(cfg).eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", type=int, default=720, help="side of the square input image")
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--quick", action="store_true", help="a small stand-in network (CI smoke run)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = v2_small(args.quick)
    params = sum(t.numel() for t in model.parameters())
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    rows = []
    for name in [s for s in args.precision.split(",") if s]:
        if resolve_precision(name, "cpu") != name:  # e.g. bf16 on an AVX2-only CPU: nothing to time
            rows.append({"precision": name, "unsupported": capabilities("cpu").description})
            continue
        dtype = DTYPES[name]
        est = DepthEstimator(model, dtype=dtype)
        est(image)  # warm-up
        walls, cpus = [], []
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            out = est(image)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        rows.append({"precision": name, "network_size": list(est.network_size(args.size, args.size)),
                     "wall_median_s": statistics.median(walls), "wall_best_s": min(walls),
                     "cpu_median_s": statistics.median(cpus), "output_shape": list(out.disparity.shape)})
        print(f"depth {name}: best {min(walls):.3f} s, median {statistics.median(walls):.3f} s", flush=True)
    result = {"model": "Depth Anything V2-Small architecture" + (" (quick stand-in)" if args.quick else ""),
              "params": params, "image": f"{args.size}x{args.size}", "threads": args.threads, "rows": rows,
              "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
