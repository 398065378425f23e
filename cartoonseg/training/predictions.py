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

from .. import rle as rle_utils
from ..evaluation.coco_eval import mask_iou
from ..evaluation.predict import detect_batch
from ..rle import encode_many

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


def _image_predictions(
    segmenter: Any, images: list[dict], anns_of: dict[int, list[dict]], root: Path, iou_thr: float, batch_size: int
) -> list[list[list[dict]]]:
    """Per image: per annotation (in file order), the RLEs of the stage-1 predictions to attach."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        bgrs = []
        for im in chunk:
            bgr = cv2.imread(str(root / im["file_name"]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(f"cannot read image {root / im['file_name']}")
            bgrs.append(bgr)
        for im, d in zip(chunk, detect_batch(segmenter, bgrs)):
            anns = anns_of.get(int(im["id"]), [])
            preds = d["binary"].astype(np.uint8)
            attached: list[list[dict]] = [[] for _ in anns]
            gts, idx = [], []
            for j, a in enumerate(anns):
                m = rle_utils.segmentation_to_mask(a.get("segmentation"), im["height"], im["width"])
                if m is not None:
                    gts.append(m)
                    idx.append(j)
            if gts:
                picks = match_predictions(np.stack(gts), preds, iou_thr)
                used = sorted({p for ps in picks for p in ps})
                rles = dict(zip(used, encode_many(preds[used]))) if used else {}
                for j, ps in zip(idx, picks):
                    attached[j] = [rles[p] for p in ps]
            out.append(attached)
    return out


def attach_predictions(
    segmenter: Any,
    gt: dict[str, Any],
    image_root: str | Path,
    iou_thr: float = 0.5,
    progress: bool = False,
    batch_size: int = 1,
    work_dir: str | Path | None = None,
    shard_size: int = 16,
    fingerprint: dict[str, Any] | None = None,
    rank: Any = None,
) -> dict[str, Any] | None:
    """A copy of the COCO dict ``gt`` whose annotations carry ``pred_segmentations`` (RLE list) from stage 1
    (:func:`cartoonseg.evaluation.predict.detect_batch`, ``batch_size`` images per pass; use ``score_thr=0.3`` as
    the original).

    With ``work_dir`` the images are shared out through :class:`cartoonseg.sharding.ShardedRun` (``torchrun``:
    one share per process, atomic resumable shard files, rank 0 merges; None is returned on the other ranks), as
    in :func:`cartoonseg.evaluation.predict.predict_coco`.
    """
    out = copy.deepcopy(gt)
    anns_of: dict[int, list[dict]] = {}
    for ann in out["annotations"]:
        anns_of.setdefault(int(ann["image_id"]), []).append(ann)
    images = [im for im in out["images"] if anns_of.get(int(im["id"]))]
    root = Path(image_root)
    from ..sharding import RankInfo, progress_bar

    if work_dir is None:
        bar = progress_bar(len(images), 0, RankInfo(), "stage-1 predictions", enabled=progress)
        per_image = []
        for start in range(0, len(images), shard_size):
            chunk = images[start : start + shard_size]
            per_image += _image_predictions(segmenter, chunk, anns_of, root, iou_thr, batch_size)
            bar.update(len(chunk))
        bar.close()
    else:
        from ..sharding import ShardedRun, agree, init_distributed

        rank = rank if rank is not None else init_distributed()
        keys = agree([str(im["id"]) for im in images])
        by_id = {str(im["id"]): im for im in images}
        run = ShardedRun(work_dir, keys, shard_size=shard_size, fingerprint=dict(fingerprint or {}, iou=iou_thr),
                         rank=rank)
        todo = run.pending()
        total = sum(len(s.keys) for s in run.mine())
        bar = progress_bar(total, total - sum(len(s.keys) for s in todo), rank, "stage-1 predictions",
                           enabled=progress)
        with run.reporting_failures():  # a failure here reaches rank 0's wait() (a marker), it does not hang it
            for shard in todo:
                chunk = [by_id[k] for k in shard.keys]
                run.save(shard, _image_predictions(segmenter, chunk, anns_of, root, iou_thr, batch_size))
                bar.update(len(chunk))
        bar.close()
        if not rank.is_main:
            return None
        run.wait()
        per_image = run.results()
        run.remove()
    for im, attached in zip(images, per_image):
        for ann, rles in zip(anns_of[int(im["id"])], attached):
            ann["pred_segmentations"] = rles
    return out
