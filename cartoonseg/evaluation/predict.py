"""Running the models over a COCO image set and writing COCO results (for Box/Mask/Boundary AP, Paper §5).

:func:`predict_coco` runs a :class:`~cartoonseg.segmenter.Segmenter` on the images of a ground-truth file and
returns the COCO results list (``image_id``, ``category_id``, ``score``, ``bbox`` xywh, ``segmentation`` RLE with
str counts). With ``stages="both"`` it runs the detector once per image and returns both the stage-1 (coarse
masks) and the refined results, which gives the paper's "w/o 2nd stage" ablation from one pass.

Speed (the results equal the one-image-at-a-time :meth:`Segmenter.__call__` path):

* the detector sees ``batch_size`` letterboxed images per forward pass (one fused inference copy of the
  network for the whole run), and post-processing works on the batch's raw head outputs;
* masks stay as stride-8 dynamic-conv logits until the kept detections are known, then are decoded straight to
  binary masks at the image size, never held as float probabilities for longer than one image;
* RLE encoding runs once per image over all its masks (:func:`cartoonseg.rle.encode_many`).

``shard=(rank, world_size)`` keeps every ``world_size``-th image starting at ``rank`` (the caller merges).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..rle import encode_many
from ..structures import Instances
from ..transforms import letterbox

__all__ = ["detect_batch", "instances_to_results", "predict_coco", "results_of"]


def results_of(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    binary: np.ndarray,
    image_id: int,
    category_ids: Sequence[int],
) -> list[dict[str, Any]]:
    """COCO results of one image from arrays: boxes xyxy ``[N,4]``, scores ``[N]``, labels ``[N]`` (indices into
    ``category_ids``), binary masks ``[N,H,W]``."""
    labels = np.asarray(labels)
    bad = labels[(labels < 0) | (labels >= len(category_ids))]
    if bad.size:
        raise ValueError(f"detector label {int(bad[0])} has no category (the set has {len(category_ids)})")
    rles = encode_many(binary)
    out = []
    for i in range(len(scores)):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[int(labels[i])]),
                "score": float(scores[i]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "segmentation": rles[i],
            }
        )
    return out


def instances_to_results(inst: Instances, image_id: int, category_ids: list[int]) -> list[dict[str, Any]]:
    """COCO results of one image's :class:`Instances` (binary masks = ``inst.binary``; boxes from the detector)."""
    return results_of(
        inst.boxes.detach().float().cpu().numpy(),
        inst.scores.detach().float().cpu().numpy(),
        inst.labels.cpu().numpy(),
        inst.binary.cpu().numpy(),
        image_id,
        category_ids,
    )


@torch.no_grad()
def detect_batch(segmenter: Any, images_bgr: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """Stage 1 on several BGR uint8 images in one forward pass.

    Returns, per image, ``boxes`` (xyxy, image pixels), ``scores``, ``labels`` (numpy) and ``binary`` (bool
    ``[N,H,W]`` numpy masks), the same values :meth:`Segmenter.detect` + ``Instances.binary`` give for the image
    alone up to the float rounding of a batched convolution.
    """
    det = segmenter.detector
    if det is None:
        raise RuntimeError("detect_batch needs a Segmenter with a detector")
    if not images_bgr:
        return []
    canvases, geoms = zip(*(letterbox(im, segmenter.det_size, det.config.pad_value) for im in images_bgr))
    x = torch.stack(canvases).to(segmenter.device)
    with segmenter._autocast():
        outputs = segmenter._infer(det)(segmenter._layout(det.normalize(x)))
    thr = det.config.mask_thr_binary
    out = []
    for i, geom in enumerate(geoms):
        dets = det.postprocess(
            outputs,
            i,
            img_shape=geom.img_shape,
            ori_shape=geom.ori_shape,
            scale_factor=geom.scale_factor,
            max_per_img=segmenter.max_instances,
            min_score=segmenter.score_thr,
            with_masks=False,
        )
        logits = det.decode_masks(outputs.mask_feat[i], dets, ori_shape=geom.ori_shape, scale_factor=geom.scale_factor)
        binary = logits.float().sigmoid_() > thr
        del logits
        out.append(
            {
                "boxes": dets.boxes.float().cpu().numpy(),
                "scores": dets.scores.float().cpu().numpy(),
                "labels": dets.labels.cpu().numpy(),
                "binary": binary.cpu().numpy(),
            }
        )
    return out


def _read(root: Path, image: dict) -> np.ndarray:
    path = root / image["file_name"]
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return bgr


def _batches(images: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(images), size):
        yield images[start : start + size]


def predict_coco(
    segmenter: Any,
    gt: dict[str, Any],
    image_root: str | Path,
    stages: str = "final",
    progress: bool = False,
    batch_size: int = 8,
    shard: tuple[int, int] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Run ``segmenter`` over the images of ``gt``.

    Args:
        segmenter: a :class:`~cartoonseg.segmenter.Segmenter`.
        gt: the COCO ground-truth dict (its ``images`` list and ``categories`` are used).
        image_root: folder the ``file_name`` entries are relative to.
        stages: ``"final"`` (whatever the Segmenter does), or ``"both"`` (requires a refiner): returns the
            stage-1 and refined results.
        progress: show a tqdm bar.
        batch_size: images per detector forward pass (1 = the plain per-image path).
        shard: ``(rank, world_size)``: only images ``rank, rank + world_size, ...`` of ``gt["images"]``.

    Returns:
        ``{"final": [...]}`` or ``{"stage1": [...], "refined": [...]}``.
    """
    if stages not in ("final", "both"):
        raise ValueError(f"stages must be 'final' or 'both', got {stages!r}")
    if stages == "both" and segmenter.refiner is None:
        raise ValueError("stages='both' needs a Segmenter with a refiner")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
    cats = sorted(int(c["id"]) for c in gt.get("categories", [])) or [0]
    root = Path(image_root)
    results: dict[str, list[dict[str, Any]]] = {"final": []} if stages == "final" else {"stage1": [], "refined": []}
    images = list(gt["images"])
    if shard is not None:
        images = images[shard[0] :: shard[1]]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), desc="predict", unit="img")
    refine = segmenter.refiner is not None
    if segmenter.detector is None:
        raise ValueError("predict_coco needs a Segmenter with a detector")
    for chunk in _batches(images, batch_size):
        bgrs = [_read(root, im) for im in chunk]
        for im, bgr, d in zip(chunk, bgrs, detect_batch(segmenter, bgrs)):
            stage1 = results_of(d["boxes"], d["scores"], d["labels"], d["binary"], im["id"], cats)
            if not refine:
                results["final"] += stage1
                continue
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            coarse = Instances(
                boxes=torch.from_numpy(d["boxes"]),
                scores=torch.from_numpy(d["scores"]),
                masks=torch.from_numpy(d["binary"]).float(),
                labels=torch.from_numpy(d["labels"]),
                mask_thr=0.5,
            )
            refined = segmenter.refine(rgb, coarse) if len(coarse) else coarse
            if stages == "both":
                results["stage1"] += stage1
                results["refined"] += instances_to_results(refined, im["id"], cats)
            else:
                results["final"] += instances_to_results(refined, im["id"], cats)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return results
