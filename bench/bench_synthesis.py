"""Benchmark: dataset synthesis throughput (images/s) and chroma-keying accuracy on procedural fixtures.

    python bench/bench_synthesis.py [--num 80] [--workers 2] [--size 640] [--json out.json]

Writes fixtures (40 characters, 10 backgrounds, fake COCO person boxes) and a dataset into a temporary
folder, then reports images/s of ``synthesize_dataset`` (process start-up included) and the IoU of the keyed
alpha with the known alpha on synthetic green/blue-screen frames.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _json_out import JSON_HELP, add_overwrite_argument, check_json, write_json  # noqa: E402  (bench/: --json FILE)
from cartoonseg.data import chroma  # noqa: E402
from cartoonseg.data.fixtures import make_chroma_frame, make_fixtures  # noqa: E402
from cartoonseg.data.synthesis import SynthesisConfig, synthesize_dataset  # noqa: E402


def _person_boxes(path: Path, n: int = 200) -> None:
    rng = np.random.default_rng(0)
    groups = []
    for i in range(n):
        k = int(rng.integers(2, 6))
        w = rng.uniform(0.05, 0.25, k)
        boxes = np.stack([rng.uniform(0, 0.7, k), rng.uniform(0, 0.3, k), w, w * rng.uniform(1.3, 2.8, k)], 1)
        boxes[:, :2] -= boxes[:, :2].min(0)
        groups.append({"image_id": i, "bboxes": boxes.round(5).tolist()})
    path.write_text(json.dumps(groups))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=80)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(p)
    args = p.parse_args()
    check_json(args)  # a file that may not be written fails now, not after the run
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_fixtures(root / "raw", 40, 10, seed=0)
        _person_boxes(root / "pb.json")
        r = synthesize_dataset(root / "raw" / "fg", root / "raw" / "bg", root / "out", args.num,
                               SynthesisConfig(size=args.size), seed=0, workers=args.workers,
                               person_boxes=root / "pb.json", progress=False)
        result["synthesis"] = {"num": args.num, "workers": args.workers, "size": args.size,
                               "images_per_s": round(r["images_per_s"], 3), "instances": r["instances"]}
    for key in ("green", "blue"):
        ious = []
        for seed in range(8):
            frame, truth = make_chroma_frame(np.random.default_rng([seed, 99]), key=key, num_characters=1 + seed % 3)
            alpha = chroma.key_frame(frame)[1]
            ious.append(float(((alpha > 0.5) & (truth > 0.5)).sum() / ((alpha > 0.5) | (truth > 0.5)).sum()))
        result[f"keying_iou_{key}"] = round(float(np.mean(ious)), 4)
    print(json.dumps(result, indent=1))
    write_json(args, result)


if __name__ == "__main__":
    main()
