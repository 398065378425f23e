"""Attaching stage-1 predictions to a training set for refiner training (pipeline_spec §3.2 [PROPOSAL]).

The original stores, for every ground-truth annotation, ``pred_segmentations``: RLE masks predicted by the
trained stage-1 model; the script that made them is not released. Here: run stage 1 (score > 0.3), and attach
to each ground truth every prediction whose mask IoU with it is > 0.5, or, when there is none, the single best
match with IoU > 0.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .. import rle as rle_utils
from ..evaluation.coco_eval import mask_iou

__all__ = ["attach_predictions", "match_predictions"]


def match_predictions(gt_masks: np.ndarray, pred_masks: np.ndarray, iou_thr: float = 0.5) -> list[list[int]]:
    """For each ground truth ``[G,H,W]``, the indices of the predictions ``[P,H,W]`` to attach (see module doc)."""
    if len(gt_masks) == 0:
        return []
    if len(pred_masks) == 0:
        return [[] for _ in range(len(gt_masks))]
    ious = mask_iou(pred_masks, gt_masks, np.zeros(len(gt_masks), bool))  # [P,G]
    out = []
    for g in range(len(gt_masks)):
        good = np.flatnonzero(ious[:, g] > iou_thr).tolist()
        if not good and ious[:, g].max() > 0:
            good = [int(ious[:, g].argmax())]
        out.append(good)
    return out


def attach_predictions(
    segmenter: Any, gt: dict[str, Any], image_root: str | Path, iou_thr: float = 0.5, progress: bool = False
) -> dict[str, Any]:
    """A copy of the COCO dict ``gt`` whose annotations carry ``pred_segmentations`` (RLE list) from
    ``segmenter.detect`` (stage 1 only; use ``score_thr=0.3`` as the original)."""
    out = copy.deepcopy(gt)
    per_image: dict[int, list[dict]] = {}
    for ann in out["annotations"]:
        per_image.setdefault(int(ann["image_id"]), []).append(ann)
    images = out["images"]
    if progress:
        from tqdm import tqdm

        images = tqdm(images, desc="stage-1 predictions")
    root = Path(image_root)
    for im in images:
        anns = per_image.get(int(im["id"]), [])
        if not anns:
            continue
        bgr = cv2.imread(str(root / im["file_name"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {root / im['file_name']}")
        with torch.no_grad():
            inst = segmenter.detect(np.ascontiguousarray(bgr[:, :, ::-1]))
        preds = inst.binary.cpu().numpy().astype(np.uint8)
        gts, idx = [], []
        for j, a in enumerate(anns):
            m = rle_utils.segmentation_to_mask(a.get("segmentation"), im["height"], im["width"])
            if m is not None:
                gts.append(m)
                idx.append(j)
            a["pred_segmentations"] = []
        if not gts:
            continue
        for j, picks in zip(idx, match_predictions(np.stack(gts), preds, iou_thr)):
            anns[j]["pred_segmentations"] = [rle_utils.encode(preds[p]) for p in picks]
    return out
