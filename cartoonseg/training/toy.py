"""A tiny procedural COCO dataset (flat-coloured outlined blobs on noisy backgrounds) for tests and smoke runs
of the training code; it needs no downloaded data. Real training data come from the synthesis pipeline
(``train.synthesize``)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .. import rle as rle_utils

__all__ = ["make_toy_coco"]


def make_toy_coco(
    out_dir: str | Path,
    num_images: int = 16,
    size: int = 96,
    seed: int = 0,
    max_instances: int = 3,
    name: str = "train",
    box_only_every: int = 0,
) -> Path:
    """Write ``<out_dir>/<name>/*.png`` and ``<out_dir>/annotations/<name>.json`` (RLE masks) and return the JSON path.

    Args:
        num_images: images to draw.
        size: square image side.
        seed: RNG seed (deterministic output).
        max_instances: 1..max_instances blobs per image; later blobs occlude earlier ones (visible masks only).
        box_only_every: when > 0, every n-th annotation is written without segmentation (box-only).
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    ann_id = 1
    for i in range(num_images):
        bg = rng.integers(0, 256, 3)
        img = np.clip(bg + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        ids = np.zeros((size, size), np.int32)
        n = int(rng.integers(1, max_instances + 1))
        for k in range(1, n + 1):
            m = np.zeros((size, size), np.uint8)
            cx, cy = rng.integers(size // 6, size - size // 6, 2)
            ax, ay = rng.integers(size // 10, size // 3, 2)
            cv2.ellipse(m, (int(cx), int(cy)), (int(ax), int(ay)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
            if rng.random() < 0.5:  # a limb
                x2, y2 = rng.integers(0, size, 2)
                cv2.line(m, (int(cx), int(cy)), (int(x2), int(y2)), 1, int(rng.integers(2, max(3, size // 16))))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            img[m > 0] = color
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, contours, -1, (20, 20, 20), 1)
            ids[m > 0] = k
        file_name = f"{i:05d}.png"
        cv2.imwrite(str(out / name / file_name), img)
        images.append({"id": i + 1, "file_name": file_name, "height": size, "width": size})
        for k in range(1, n + 1):
            m = (ids == k).astype(np.uint8)
            if m.sum() < 4:
                continue
            ann = {
                "id": ann_id,
                "image_id": i + 1,
                "category_id": 0,
                "iscrowd": 0,
                "area": float(m.sum()),
                "bbox": rle_utils.mask_bbox(m),
                "segmentation": rle_utils.encode(m),
            }
            if box_only_every and ann_id % box_only_every == 0:
                ann["segmentation"] = []
            anns.append(ann)
            ann_id += 1
    data = {"images": images, "annotations": anns, "categories": [{"id": 0, "name": "object", "isthing": 1}]}
    path = out / "annotations" / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
