"""Running the models over a COCO image set and writing COCO results (for Box/Mask/Boundary AP, Paper §5).

:func:`predict_coco` runs a :class:`~cartoonseg.segmenter.Segmenter` on every image of a ground-truth file and
returns the COCO results list (``image_id``, ``category_id``, ``score``, ``bbox`` xywh, ``segmentation`` RLE with
str counts). With ``stages="both"`` it runs the detector once per image and returns both the stage-1 (coarse
masks) and the refined results, which gives the paper's "w/o 2nd stage" ablation from one pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..structures import Instances
from .. import rle as rle_utils

__all__ = ["instances_to_results", "predict_coco"]


def instances_to_results(inst: Instances, image_id: int, category_ids: list[int]) -> list[dict[str, Any]]:
    """COCO results of one image's :class:`Instances` (binary masks = ``inst.binary``; boxes from the detector)."""
    out = []
    binary = inst.binary.cpu().numpy().astype(np.uint8)
    boxes = inst.boxes.detach().float().cpu().numpy()
    scores = inst.scores.detach().float().cpu().numpy()
    labels = inst.labels.cpu().numpy()
    for i in range(len(inst)):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        label = int(labels[i])
        if not 0 <= label < len(category_ids):
            raise ValueError(f"detector label {label} has no category (the set has {len(category_ids)})")
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[label]),
                "score": float(scores[i]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "segmentation": rle_utils.encode(binary[i]),
            }
        )
    return out


def predict_coco(
    segmenter: Any,
    gt: dict[str, Any],
    image_root: str | Path,
    stages: str = "final",
    progress: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Run ``segmenter`` over the images of ``gt``.

    Args:
        segmenter: a :class:`~cartoonseg.segmenter.Segmenter`.
        gt: the COCO ground-truth dict (its ``images`` list and ``categories`` are used).
        image_root: folder the ``file_name`` entries are relative to.
        stages: ``"final"`` (whatever the Segmenter does), or ``"both"`` (requires a refiner): returns the
            stage-1 and refined results.
        progress: show a tqdm bar.

    Returns:
        ``{"final": [...]}`` or ``{"stage1": [...], "refined": [...]}``.
    """
    if stages not in ("final", "both"):
        raise ValueError(f"stages must be 'final' or 'both', got {stages!r}")
    if stages == "both" and segmenter.refiner is None:
        raise ValueError("stages='both' needs a Segmenter with a refiner")
    cats = sorted(int(c["id"]) for c in gt.get("categories", [])) or [0]
    root = Path(image_root)
    results: dict[str, list[dict[str, Any]]] = {"final": []} if stages == "final" else {"stage1": [], "refined": []}
    images = gt["images"]
    iterator = images
    if progress:
        from tqdm import tqdm

        iterator = tqdm(images, desc="predict")
    for im in iterator:
        path = root / im["file_name"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {path}")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        with torch.no_grad():
            if stages == "final":
                results["final"] += instances_to_results(segmenter(rgb), im["id"], cats)
            else:
                coarse = segmenter.detect(rgb)
                results["stage1"] += instances_to_results(coarse, im["id"], cats)
                refined = segmenter.refine(rgb, coarse) if len(coarse) else coarse
                results["refined"] += instances_to_results(refined, im["id"], cats)
    return results
