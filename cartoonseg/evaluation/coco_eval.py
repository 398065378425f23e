"""COCO-style Box AP, Mask AP and Boundary AP in numpy (no pycocotools).

Follows the COCO detection evaluation protocol as implemented by pycocotools ``COCOeval``
(``evaluateImg`` / ``accumulate`` / ``summarize``): IoU thresholds 0.50:0.05:0.95, 101 recall points,
area ranges all/small/medium/large (from the ground truth's ``area`` field), greedy score-ordered matching in
which crowd ground truths may absorb many detections and area-ignored ground truths are matched last.

Boundary AP follows Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation"
(CVPR 2021) and its reference API (bowenc0221/boundary-iou-api): the boundary of a mask is the mask minus its
erosion by a 3x3 kernel repeated ``d = max(1, round(dilation_ratio * image_diagonal))`` times (the mask is
zero-padded by one pixel first), and for non-crowd ground truths the matching IoU is
``min(mask IoU, boundary IoU)`` (Paper eq. 8 uses dilation ratio 0.02).

Entry points: :func:`evaluate` (one IoU type) and :func:`evaluate_all` (bbox + segm + boundary as the flat
dictionary the ``train.evaluate`` script prints).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from .. import rle as rle_utils

__all__ = [
    "IOU_TYPES",
    "EvalParams",
    "box_iou_xywh",
    "category_ids",
    "evaluate",
    "evaluate_all",
    "mask_iou",
    "mask_to_boundary",
    "masks_to_boundaries",
]

IOU_TYPES = ("bbox", "segm", "boundary")
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}


@dataclass(frozen=True)
class EvalParams:
    """Evaluation settings (defaults = pycocotools ``Params(iouType)``).

    Attributes:
        iou_thrs: IoU thresholds (0.50:0.05:0.95).
        rec_thrs: recall sampling points (0:0.01:1).
        max_dets: detections kept per image and category, ascending; AP uses the last entry. The original
            mmdet metric used (100, 300, 1000); with at most 100 detections per image both give the same AP.
        area_ranges: name -> (min, max) ground-truth area, ``all`` first.
        dilation_ratio: boundary width as a fraction of the image diagonal (Boundary AP only).
        use_cats: evaluate per category (False pools all categories as one).
    """

    iou_thrs: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
    rec_thrs: tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 101).tolist())
    max_dets: tuple[int, ...] = (1, 10, 100)
    area_ranges: tuple[tuple[str, tuple[float, float]], ...] = tuple(AREA_RANGES.items())
    dilation_ratio: float = 0.02
    use_cats: bool = True


# ----------------------------------------------------------------------------------------------- geometry
def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary band of a binary mask ``[H,W]`` (uint8 0/1): mask minus its erosion by a 3x3 kernel
    applied ``max(1, round(dilation_ratio * sqrt(H^2 + W^2)))`` times, after zero-padding by one pixel."""
    mask = np.asarray(mask, dtype=np.uint8)
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * float(np.sqrt(h * h + w * w)))))
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1 : h + 1, 1 : w + 1]
    return mask - eroded


def masks_to_boundaries(masks: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """:func:`mask_to_boundary` of every mask of ``[N,H,W]`` with one erosion: the masks are stacked vertically
    with a zero row between neighbours, which erodes each mask exactly as its own zero padding does (erosion is
    a minimum filter, so nothing crosses a zero row)."""
    masks = np.asarray(masks, dtype=np.uint8)
    n, h, w = masks.shape
    if n == 0:
        return masks.copy()
    d = max(1, int(round(dilation_ratio * float(np.sqrt(h * h + w * w)))))
    tall = np.zeros((n * (h + 1) + 1, w + 2), np.uint8)
    view = tall[1:].reshape(n, h + 1, w + 2)
    view[:, :h, 1 : w + 1] = masks
    eroded = cv2.erode(tall, np.ones((3, 3), np.uint8), iterations=d)
    eroded = eroded[1:].reshape(n, h + 1, w + 2)[:, :h, 1 : w + 1]
    return masks - eroded


def box_iou_xywh(dt: np.ndarray, gt: np.ndarray, iscrowd: np.ndarray) -> np.ndarray:
    """IoU ``[D,G]`` of COCO ``xywh`` boxes; for crowd ground truths the union is the detection area."""
    dt = np.asarray(dt, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    if dt.size == 0 or gt.size == 0:
        return np.zeros((len(dt), len(gt)))
    dx2, dy2 = dt[:, 0] + dt[:, 2], dt[:, 1] + dt[:, 3]
    gx2, gy2 = gt[:, 0] + gt[:, 2], gt[:, 1] + gt[:, 3]
    iw = np.clip(np.minimum(dx2[:, None], gx2[None]) - np.maximum(dt[:, None, 0], gt[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(dy2[:, None], gy2[None]) - np.maximum(dt[:, None, 1], gt[None, :, 1]), 0, None)
    inter = iw * ih
    da = (dt[:, 2] * dt[:, 3])[:, None]
    ga = (gt[:, 2] * gt[:, 3])[None]
    union = np.where(np.asarray(iscrowd, bool)[None], da, da + ga - inter)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def mask_iou(dt: np.ndarray, gt: np.ndarray, iscrowd: np.ndarray) -> np.ndarray:
    """IoU ``[D,G]`` of binary masks ``dt [D,H,W]`` and ``gt [G,H,W]`` (crowd: intersection / detection area)."""
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    d = torch.from_numpy(np.ascontiguousarray(dt).reshape(len(dt), -1))
    g = torch.from_numpy(np.ascontiguousarray(gt).reshape(len(gt), -1))
    # pixel counts are integers: float32 sums are exact below 2^24 pixels per mask, float64 beyond
    dtype = torch.float32 if d.shape[1] < 2**24 else torch.float64
    d, g = d.to(dtype), g.to(dtype)
    inter = (d @ g.T).double().numpy()
    da = d.sum(1).double().numpy()[:, None]  # exact in ``dtype`` too
    ga = g.sum(1).double().numpy()[None]
    union = np.where(np.asarray(iscrowd, bool)[None], da, da + ga - inter)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# ----------------------------------------------------------------------------------------------- inputs
def category_ids(gt: dict[str, Any]) -> list[int]:
    """The ground truth's category ids, ascending: its ``categories``, or the ids its annotations use when it lists
    none (what the evaluator scores and what predictions are labelled with)."""
    return sorted(int(c["id"]) for c in gt.get("categories", [])) or sorted(
        {int(a["category_id"]) for a in gt.get("annotations", [])}
    )


def _as_dataset(gt: dict[str, Any]) -> tuple[dict[int, dict], dict[tuple[int, int], list[dict]], list[int]]:
    if not isinstance(gt, dict) or "annotations" not in gt or "images" not in gt:
        raise ValueError("ground truth must be a COCO instances dict with 'images' and 'annotations'")
    images = {int(im["id"]): im for im in gt["images"]}
    cat_ids = category_ids(gt)
    per: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for ann in gt["annotations"]:
        per[(int(ann["image_id"]), int(ann["category_id"]))].append(ann)
    return images, per, cat_ids


def _gt_mask(ann: dict, image: dict) -> np.ndarray:
    mask = rle_utils.segmentation_to_mask(ann.get("segmentation"), image["height"], image["width"])
    if mask is None:  # box-only ground truth: its rectangle stands in for the mask
        mask = np.zeros((int(image["height"]), int(image["width"])), np.uint8)
        x, y, w, h = ann["bbox"]
        mask[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = 1
    return mask


def _dt_masks(dets: list[dict], image: dict) -> np.ndarray:
    """``[D,H,W]`` masks of detections: one vectorised decode when all are compressed RLEs of the image size."""
    h, w = int(image["height"]), int(image["width"])
    if not dets:
        return np.zeros((0, h, w), np.uint8)
    segs = [d.get("segmentation") for d in dets]
    if all(isinstance(g, dict) and isinstance(g.get("counts"), str) and list(g.get("size", ())) == [h, w]
           for g in segs):
        try:
            return rle_utils.decode_many(segs)
        except ValueError:
            pass  # fall back to the per-detection path and its error message
    return np.stack([_dt_mask(d, image) for d in dets])


def _dt_mask(det: dict, image: dict) -> np.ndarray:
    seg = det.get("segmentation")
    if seg is None:
        raise ValueError(f"detection for image {det.get('image_id')} has no 'segmentation' (needed for segm AP)")
    mask = rle_utils.segmentation_to_mask(seg, image["height"], image["width"])
    if mask is None:
        raise ValueError(f"detection for image {det.get('image_id')} has an unreadable 'segmentation'")
    return mask


# ----------------------------------------------------------------------------------------------- core
def _evaluate_image(
    ious: np.ndarray,
    gt_areas: np.ndarray,
    gt_crowd: np.ndarray,
    gt_ignore_flag: np.ndarray,
    dt_areas: np.ndarray,
    dt_scores: np.ndarray,
    area_rng: tuple[float, float],
    max_det: int,
    iou_thrs: np.ndarray,
) -> dict[str, np.ndarray] | None:
    """Greedy matching of one image/category/area range (pycocotools ``evaluateImg``)."""
    if len(gt_areas) == 0 and len(dt_scores) == 0:
        return None
    g_ignore = (gt_ignore_flag | (gt_areas < area_rng[0]) | (gt_areas > area_rng[1])).astype(np.int64)
    g_order = np.argsort(g_ignore, kind="mergesort")
    g_ignore = g_ignore[g_order]
    crowd = gt_crowd[g_order]
    d_order = np.argsort(-dt_scores, kind="mergesort")[:max_det]
    ious = ious[d_order][:, g_order] if ious.size else np.zeros((len(d_order), len(g_order)))
    t_count, d_count, g_count = len(iou_thrs), len(d_order), len(g_order)
    gtm = np.full((t_count, g_count), -1, dtype=np.int64)
    dtm = np.full((t_count, d_count), -1, dtype=np.int64)
    dt_ig = np.zeros((t_count, d_count), dtype=bool)
    if g_count and d_count:
        # pycocotools' loop, for all thresholds at once: a detection takes the available ground truth with the
        # highest IoU >= the threshold (the last one on ties), non-ignored ground truths first; crowd ground
        # truths stay available. A detection below the lowest threshold everywhere matches nothing: skipped.
        thr = np.minimum(iou_thrs, 1 - 1e-10)[:, None]
        g_ign = g_ignore.astype(bool)
        for di in np.flatnonzero(ious.max(1) >= thr.min()):
            row = ious[di][None]
            ok = ((gtm < 0) | crowd[None]) & (row >= thr)
            m = np.full(t_count, -1, dtype=np.int64)
            for group in (~g_ign, g_ign):
                cand = ok & group[None] & (m < 0)[:, None]
                if not cand.any():
                    continue
                vals = np.where(cand, row, -np.inf)
                best = vals.max(1)
                has = np.isfinite(best)
                last = g_count - 1 - np.argmax((vals == best[:, None])[:, ::-1], axis=1)
                m = np.where(has & (m < 0), last, m)
            hit = np.flatnonzero(m >= 0)
            if hit.size:
                dtm[hit, di] = m[hit]
                gtm[hit, m[hit]] = di
                dt_ig[hit, di] = g_ign[m[hit]]
    d_areas = dt_areas[d_order]
    out_of_range = (d_areas < area_rng[0]) | (d_areas > area_rng[1])
    dt_ig = dt_ig | ((dtm < 0) & out_of_range[None])
    return {
        "dt_matched": dtm >= 0,
        "dt_ignore": dt_ig,
        "dt_scores": dt_scores[d_order],
        "gt_ignore": g_ignore.astype(bool),
    }


def _accumulate(evals: list[dict | None], rec_thrs: np.ndarray, t_count: int) -> np.ndarray:
    """Precision at each recall threshold ``[T,R]`` (-1 where there is no ground truth), as ``accumulate``."""
    evals = [e for e in evals if e is not None]
    precision = -np.ones((t_count, len(rec_thrs)))
    if not evals:
        return precision
    scores = np.concatenate([e["dt_scores"] for e in evals])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e["dt_matched"] for e in evals], axis=1)[:, order]
    ignored = np.concatenate([e["dt_ignore"] for e in evals], axis=1)[:, order]
    npig = int(sum((~e["gt_ignore"]).sum() for e in evals))
    if npig == 0:
        return precision
    tps = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fps = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    for ti in range(t_count):
        tp, fp = tps[ti], fps[ti]
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        q = np.zeros(len(rec_thrs))
        pr = np.maximum.accumulate(pr[::-1])[::-1] if pr.size else pr
        inds = np.searchsorted(rc, rec_thrs, side="left")
        valid = inds < len(pr)
        q[valid] = pr[inds[valid]]
        precision[ti] = q
    return precision


def _mean_valid(values: np.ndarray) -> float:
    v = values[values > -1]
    return float(v.mean()) if v.size else -1.0


def evaluate(
    gt: dict[str, Any],
    detections: Sequence[dict[str, Any]],
    iou_type: str = "bbox",
    params: EvalParams | None = None,
    _cache: dict | None = None,
) -> dict[str, float]:
    """COCO evaluation of one IoU type.

    Args:
        gt: COCO instances dict (``images`` with height/width, ``annotations`` with bbox/area/iscrowd and, for
            segm/boundary, ``segmentation`` as polygons or RLE; ``categories``).
        detections: COCO results list: ``image_id``, ``category_id``, ``score`` and ``bbox`` (xywh, for bbox)
            or ``segmentation`` (RLE, for segm/boundary). Detections on unknown images raise ValueError.
        iou_type: ``"bbox"``, ``"segm"`` or ``"boundary"``.
        params: :class:`EvalParams` (COCO defaults).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}`` in [0, 1]
        (-1 where undefined, as pycocotools). AR keys are named after ``params.max_dets``.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    params = params or EvalParams()
    if list(params.max_dets) != sorted(params.max_dets):  # AP and the area keys use the largest (pycocotools sorts)
        params = dataclasses.replace(params, max_dets=tuple(sorted(params.max_dets)))
    images, gt_per, cat_ids = _as_dataset(gt)
    for k in ("image_id", "category_id", "score"):
        for det in detections:
            if k not in det:
                raise ValueError(f"detection {det!r:.100} lacks {k!r}")
    dt_per: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for det in detections:
        if int(det["image_id"]) not in images:
            raise ValueError(f"detection refers to image_id {det['image_id']} which is not in the ground truth")
        dt_per[(int(det["image_id"]), int(det["category_id"]))].append(det)
    if not params.use_cats:
        # as pycocotools: per image the ground truth's categories in ascending order, one after the other (so equal
        # scores keep that order through the stable sort), and only detections of those categories
        merged_gt: dict[tuple[int, int], list[dict]] = defaultdict(list)
        merged_dt: dict[tuple[int, int], list[dict]] = defaultdict(list)
        known = set(cat_ids)
        for (img, _), anns in sorted(gt_per.items(), key=lambda item: item[0][1]):
            merged_gt[(img, -1)].extend(anns)
        for (img, cat), dets in sorted(dt_per.items(), key=lambda item: item[0][1]):
            if cat in known:
                merged_dt[(img, -1)].extend(dets)
        gt_per, dt_per, cat_ids = merged_gt, merged_dt, [-1]

    iou_thrs = np.asarray(params.iou_thrs, dtype=np.float64)
    rec_thrs = np.asarray(params.rec_thrs, dtype=np.float64)
    max_det_top = max(params.max_dets)
    area_names = [name for name, _ in params.area_ranges]
    masks = _cache if _cache is not None else {}

    # per (image, category): IoU matrix and per-item arrays, computed once for all area ranges / max dets
    per_pair: dict[tuple[int, int], tuple] = {}
    for img_id in sorted(images):
        image = images[img_id]
        for cat in cat_ids:
            gts = gt_per.get((img_id, cat), [])
            dts = dt_per.get((img_id, cat), [])
            if not gts and not dts:
                continue
            dts = sorted(dts, key=lambda d: -float(d["score"]))[:max_det_top]
            crowd = np.array([bool(a.get("iscrowd", 0)) for a in gts], dtype=bool)
            gt_ign = crowd.copy()  # pycocotools: 'ignore' is overwritten by 'iscrowd'
            gt_area = np.array([float(a.get("area", 0.0)) for a in gts], dtype=np.float64)
            scores = np.array([float(d["score"]) for d in dts], dtype=np.float64)
            if iou_type == "bbox":
                for d in dts:
                    if "bbox" not in d:
                        raise ValueError(f"detection {d!r:.100} lacks 'bbox' (needed for bbox AP)")
                dboxes = np.array([d["bbox"] for d in dts], dtype=np.float64).reshape(-1, 4)
                gboxes = np.array([a["bbox"] for a in gts], dtype=np.float64).reshape(-1, 4)
                ious = box_iou_xywh(dboxes, gboxes, crowd)
                dt_area = dboxes[:, 2] * dboxes[:, 3]
            else:
                # masks are decoded once per (image, category); the mask and boundary IoUs of every type the
                # caller asked for are computed then and kept (small), the masks are not
                entry = masks.get((img_id, cat))
                if entry is None:
                    dmasks = _dt_masks(dts, image)
                    gmasks = (np.stack([_gt_mask(a, image) for a in gts]) if gts
                              else np.zeros((0, int(image["height"]), int(image["width"])), np.uint8))
                    entry = {"iou": mask_iou(dmasks, gmasks, crowd),
                             "d_area": dmasks.sum(axis=(1, 2)).astype(np.float64)}
                    if (iou_type == "boundary" or "boundary" in masks.get("types", ())) and len(dts) and len(gts):
                        db = masks_to_boundaries(dmasks, params.dilation_ratio)
                        gb = masks_to_boundaries(gmasks, params.dilation_ratio)
                        entry["biou"] = mask_iou(db, gb, crowd)
                    del dmasks, gmasks
                    masks[(img_id, cat)] = entry
                ious = entry["iou"]
                dt_area = entry["d_area"]
                if iou_type == "boundary" and len(dts) and len(gts):
                    ious = np.where(crowd[None], ious, np.minimum(ious, entry["biou"]))
            per_pair[(img_id, cat)] = (ious, gt_area, crowd, gt_ign, dt_area, scores)

    t_count = len(iou_thrs)
    precision = -np.ones((t_count, len(rec_thrs), len(cat_ids), len(area_names), len(params.max_dets)))
    recall = -np.ones((t_count, len(cat_ids), len(area_names), len(params.max_dets)))
    for ai, (_, rng) in enumerate(params.area_ranges):
        for ki, cat in enumerate(cat_ids):
            # evaluateImg runs once with the largest max_det; accumulate truncates for smaller ones
            evals = [
                _evaluate_image(*per_pair[(img_id, cat)][:5], per_pair[(img_id, cat)][5], rng, max_det_top, iou_thrs)
                for img_id in sorted(images)
                if (img_id, cat) in per_pair
            ]
            for mi, max_det in enumerate(params.max_dets):
                cut = [
                    None
                    if e is None
                    else {
                        "dt_matched": e["dt_matched"][:, :max_det],
                        "dt_ignore": e["dt_ignore"][:, :max_det],
                        "dt_scores": e["dt_scores"][:max_det],
                        "gt_ignore": e["gt_ignore"],
                    }
                    for e in evals
                ]
                precision[:, :, ki, ai, mi] = _accumulate(cut, rec_thrs, t_count)
                recall[:, ki, ai, mi] = _recall(cut, t_count)

    def ap(iou: float | None = None, area: str = "all", mi: int = -1) -> float:
        p = precision[:, :, :, area_names.index(area), mi]
        if iou is not None:
            p = p[np.flatnonzero(np.isclose(iou_thrs, iou))]
        return _mean_valid(p)

    def ar(area: str = "all", mi: int = -1) -> float:
        return _mean_valid(recall[:, :, area_names.index(area), mi])

    out = {
        "AP": ap(),
        "AP50": ap(0.5),
        "AP75": ap(0.75),
        "APs": ap(area="small") if "small" in area_names else -1.0,
        "APm": ap(area="medium") if "medium" in area_names else -1.0,
        "APl": ap(area="large") if "large" in area_names else -1.0,
    }
    for mi, md in enumerate(params.max_dets):
        out[f"AR{md}"] = ar(mi=mi)
    for name in ("small", "medium", "large"):
        if name in area_names:
            out[f"AR{name[0]}"] = ar(area=name)
    return out


def _recall(evals: list[dict | None], t_count: int) -> np.ndarray:
    evals = [e for e in evals if e is not None]
    npig = int(sum((~e["gt_ignore"]).sum() for e in evals)) if evals else 0
    if npig == 0:
        return -np.ones(t_count)
    matched = np.concatenate([e["dt_matched"] for e in evals], axis=1)
    ignored = np.concatenate([e["dt_ignore"] for e in evals], axis=1)
    return (matched & ~ignored).sum(1) / npig


def evaluate_all(
    gt: dict[str, Any],
    detections: Sequence[dict[str, Any]],
    iou_types: Iterable[str] = IOU_TYPES,
    params: EvalParams | None = None,
) -> dict[str, float]:
    """Flat summary for several IoU types: ``{bbox_AP, bbox_AP50, bbox_AP75, segm_AP, ..., boundary_AP75}``
    plus the full per-type dictionaries under ``<type>_`` prefixes (APs/APm/APl/AR...)."""
    out: dict[str, float] = {}
    iou_types = tuple(iou_types)
    cache: dict = {"types": iou_types}  # mask/boundary IoUs, computed once for segm and boundary
    for t in iou_types:
        if t != "bbox" and detections and any("segmentation" not in d for d in detections):
            raise ValueError(f"{t} AP needs a 'segmentation' (RLE) in every detection")
        stats = evaluate(gt, detections, t, params, _cache=cache)
        for k, v in stats.items():
            out[f"{t}_{k}"] = v
    return out
