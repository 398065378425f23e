"""Benchmark of cartoonseg's PatchMatch inpainting (and OpenCV Telea) on a synthetic textured scene.

Paper: arXiv 2312.01943 §6.1 removes characters with PatchMatch (patch size 3) before diffusion inpainting; the target
for this re-implementation is "a 1024x1024 image with a 25 % hole in seconds on a 2-core CPU".

    OMP_NUM_THREADS=1 python bench/bench_inpaint.py                 # 1024², 25 % square hole, 1 thread
    python bench/bench_inpaint.py --size 1024 --threads 2 --repeat 3
    python bench/bench_inpaint.py --figure docs/inpaint_before_after.png   # also write the before/after picture

Prints one JSON line per method with wall and CPU seconds (median over --repeat), the load average, and a quality
figure: mean absolute error of the fill against the known background, and the fill's contrast (per-channel
standard deviation) relative to the background's, which tells texture (≈1) from smear (≪1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _json_out import JSON_HELP, add_overwrite_argument, check_json, write_json  # noqa: E402  (bench/: --json FILE)

from cartoonseg.inpaint import patchmatch_inpaint, telea_inpaint


def make_scene(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(background, image with 'characters', hole mask) — the hole is a centred square covering 25 % plus
    two character silhouettes (ellipses) inside it painted in saturated colours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    s = size / 256.0
    bg = np.zeros((size, size, 3), np.float32)
    bg[..., 0] = 50 + 140 * ((((x + y) / (8 * s)).astype(int)) % 2)
    bg[..., 1] = 110 + 70 * ((((x / (16 * s)).astype(int) + (y / (16 * s)).astype(int))) % 2)
    bg[..., 2] = 210 - 120 * y / size
    bg += rng.normal(0, 5, bg.shape)
    bg = np.clip(bg, 0, 255).astype(np.uint8)
    hole = np.zeros((size, size), bool)
    q = size // 4
    hole[q:q + size // 2, q:q + size // 2] = True  # 25 % of the image
    img = bg.copy()
    for cx, cy, color in ((0.42, 0.5, (255, 0, 255)), (0.6, 0.55, (255, 230, 0))):
        e = ((x - cx * size) / (0.08 * size)) ** 2 + ((y - cy * size) / (0.2 * size)) ** 2 <= 1
        img[e & hole] = color
    return bg, img, hole


def quality(out: np.ndarray, bg: np.ndarray, hole: np.ndarray) -> dict:
    fill, truth = out[hole].astype(np.float32), bg[hole].astype(np.float32)
    return {
        "mae_vs_background": round(float(np.abs(fill - truth).mean()), 2),
        "contrast_ratio": round(float(fill.std(0).mean() / max(truth.std(0).mean(), 1e-6)), 3),
    }


def run(method: str, img, hole, repeat: int):
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = patchmatch_inpaint(img, hole, patch_size=3, seed=0) if method == "patchmatch" else telea_inpaint(img, hole)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return out, statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--figure", default=None, help="write a before / PatchMatch / Telea picture here (PNG)")
    ap.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(ap)
    args = ap.parse_args()
    check_json(args)  # a file that may not be written fails now, not after the run
    torch.set_num_threads(args.threads)
    bg, img, hole = make_scene(args.size)
    outs, rows = {}, []
    for method in ("patchmatch", "telea"):
        out, wall, cpu = run(method, img, hole, args.repeat)
        outs[method] = out
        q = quality(out, bg, hole)
        q["known_pixels_unchanged"] = bool(np.array_equal(out[~hole], img[~hole]))
        rows.append({
            "method": method, "size": args.size, "hole_fraction": round(float(hole.mean()), 4), "threads": args.threads,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "loadavg": os.getloadavg()[0], **q,
        })
        print(json.dumps(rows[-1]), flush=True)
    write_json(args, {"rows": rows})
    if args.figure:
        from PIL import Image, ImageDraw

        shown = img.copy()
        shown[hole] = (shown[hole].astype(np.uint16) // 3).astype(np.uint8)  # darken the hole to show it
        panels = [shown, outs["patchmatch"], outs["telea"], bg]
        labels = ["input (hole darkened, 25 %)", "PatchMatch (patch 3)", "OpenCV Telea", "ground truth"]
        small = 384
        tiles = []
        for p, label in zip(panels, labels):
            t = Image.fromarray(p).resize((small, small), Image.LANCZOS)
            ImageDraw.Draw(t).rectangle([0, 0, small, 18], fill=(0, 0, 0))
            ImageDraw.Draw(t).text((4, 3), label, fill=(255, 255, 255))
            tiles.append(t)
        canvas = Image.new("RGB", (small * len(tiles), small))
        for i, t in enumerate(tiles):
            canvas.paste(t, (i * small, 0))
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        canvas.save(args.figure, optimize=True)
        print(json.dumps({"figure": args.figure}))


if __name__ == "__main__":
    main()
