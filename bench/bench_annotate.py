"""Throughput of ``python -m cartoonseg annotate``: images per second at 720², 1 process vs N processes (torchrun),
for the tiny and the released-size (RTMDet-Ins-L + IS-Net) models.

Random weights saved in the released file layouts stand in for the real ones (speed does not depend on the values);
to make the refiner work as on real images, every image keeps its 3 best detections (``--score-thr 0
--max-instances 3``). Each process gets ``--threads`` CPU threads (the machine's cores / processes by default).
Wall time includes process start and model loading, as a user sees it (``images_per_s`` = images / wall time), and
every line carries the load average (the figures are only comparable on an otherwise idle machine).

    python bench/bench_annotate.py                        # tiny and L, 1 vs 2 processes, 8 images each
    python bench/bench_annotate.py --models l --images 16 --procs 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _weights(folder: Path, model: str) -> tuple[Path, Path]:
    import torch

    import cartoonseg

    torch.manual_seed(0)  # random weights in the package's own format (speed does not depend on the values)
    det = cartoonseg.save_weights(cartoonseg.build_detector(model), folder / f"{model}_detector.safetensors")
    ref = cartoonseg.save_weights(cartoonseg.build_refiner("tiny" if model == "tiny" else "isnet"),
                                  folder / f"{model}_refiner.safetensors")
    return det, ref


def _images(folder: Path, count: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = np.full((size, size, 3), 230, np.uint8)
        for _ in range(3):
            x, y = rng.integers(0, size - size // 3, 2)
            img[y:y + size // 3, x:x + size // 4] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(folder / f"img{i:04d}.png")


def run(model: str, procs: int, images: Path, det: Path, ref: Path, out: Path, threads: int) -> dict:
    args = ["-m", "cartoonseg", "annotate", str(images), "--out", str(out), "--detector", str(det), "--refiner",
            str(ref), "--score-thr", "0", "--max-instances", "3", "--quiet", "--threads", str(threads),
            "--shard-size", "2"]
    cmd = [sys.executable, *args] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *args]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    n = len(json.loads(out.read_text())["images"])
    return {"model": model, "processes": procs, "threads_per_process": threads, "images": n, "size": 720,
            "wall_s": round(wall, 2), "images_per_s": round(n / wall, 3),
            "load_avg": [round(v, 2) for v in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "l"], choices=["tiny", "s", "m", "l", "x"])
    ap.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="threads per process (default: cores / processes)")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _images(tmp / "images", args.images, 720)
        for model in args.models:
            det, ref = _weights(tmp, model)
            for procs in args.procs:
                threads = args.threads or max(1, cores // procs)
                print(json.dumps(run(model, procs, tmp / "images", det, ref, tmp / f"{model}_{procs}.json", threads)),
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
