"""Running the models over a COCO image set and writing COCO results (for Box/Mask/Boundary AP, Paper §5).

:func:`predict_coco` runs a :class:`~cartoonseg.segmenter.Segmenter` on the images of a ground-truth file and
returns the COCO results list (``image_id``, ``category_id``, ``score``, ``bbox`` xywh, ``segmentation`` RLE with
str counts). With ``stages="both"`` it runs the detector once per image and returns both the stage-1 (coarse
masks) and the refined results, which gives the paper's "w/o 2nd stage" ablation from one pass.

Speed (with ``batch_size=1`` the results equal the one-image-at-a-time :meth:`Segmenter.__call__` path bit for
bit):

* the detector sees ``batch_size`` letterboxed images per forward pass, and post-processing works on the batch's
  raw head outputs;
* masks stay as stride-8 dynamic-conv logits until NMS and the score filter have picked the detections, then are
  decoded straight to binary masks at the image size, one image at a time;
* RLE encoding runs once per image over all its masks (:func:`cartoonseg.rle.encode_many`);
* with ``work_dir``, many processes (``torchrun``) share the images through :mod:`cartoonseg.sharding`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..rle import encode_many
from ..structures import Instances
from ..transforms import letterbox
from .coco_eval import category_ids

__all__ = ["detect_batch", "instances_to_results", "predict_coco", "predict_images", "results_of"]


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
    alone (thresholded at the Segmenter's ``result_mask_thr`` when it has no refiner) up to the float rounding of a
    batched convolution.
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
    # the refiner's prompts use the detector's own threshold; final coarse masks the one the Segmenter returns
    thr = det.config.mask_thr_binary if segmenter.refiner is not None else segmenter.result_mask_thr
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
        binary = det.decode_binary_masks(
            outputs.mask_feat[i], dets, ori_shape=geom.ori_shape, scale_factor=geom.scale_factor, thr=thr
        )
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


def _check(segmenter: Any, stages: str, batch_size: int) -> None:
    if stages not in ("final", "both"):
        raise ValueError(f"stages must be 'final' or 'both', got {stages!r}")
    if segmenter.detector is None:
        raise ValueError("predictions need a Segmenter with a detector")
    if stages == "both" and segmenter.refiner is None:
        raise ValueError("stages='both' needs a Segmenter with a refiner")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _stage_names(stages: str) -> tuple[str, ...]:
    return ("final",) if stages == "final" else ("stage1", "refined")


def predict_images(
    segmenter: Any,
    images: Sequence[dict],
    image_root: str | Path,
    category_ids: Sequence[int],
    stages: str = "final",
    batch_size: int = 1,
    on_image: Any = None,
) -> list[dict[str, list[dict[str, Any]]]]:
    """Per image of ``images`` (COCO image records): ``{stage: [COCO results]}`` (see :func:`predict_coco`).
    ``on_image()`` is called after each image (progress)."""
    _check(segmenter, stages, batch_size)
    root = Path(image_root)
    refine = segmenter.refiner is not None
    out: list[dict[str, list[dict[str, Any]]]] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        bgrs = [_read(root, im) for im in chunk]
        for im, bgr, d in zip(chunk, bgrs, detect_batch(segmenter, bgrs)):
            stage1 = results_of(d["boxes"], d["scores"], d["labels"], d["binary"], im["id"], category_ids)
            if not refine:
                out.append({"final": stage1})
            else:
                coarse = Instances(
                    boxes=torch.from_numpy(d["boxes"]),
                    scores=torch.from_numpy(d["scores"]),
                    masks=torch.from_numpy(d["binary"]).float(),
                    labels=torch.from_numpy(d["labels"]),
                    mask_thr=0.5,
                )
                rgb = np.ascontiguousarray(bgr[:, :, ::-1])
                refined = segmenter.refine(rgb, coarse) if len(coarse) else coarse
                refined_res = instances_to_results(refined, im["id"], category_ids)
                out.append({"stage1": stage1, "refined": refined_res} if stages == "both" else {"final": refined_res})
            if on_image is not None:
                on_image()
    return out


def predict_coco(
    segmenter: Any,
    gt: dict[str, Any],
    image_root: str | Path,
    stages: str = "final",
    progress: bool = False,
    batch_size: int = 1,
    work_dir: str | Path | None = None,
    shard_size: int = 16,
    fingerprint: dict[str, Any] | None = None,
    rank: Any = None,
) -> dict[str, list[dict[str, Any]]] | None:
    """Run ``segmenter`` over the images of ``gt``.

    Args:
        segmenter: a :class:`~cartoonseg.segmenter.Segmenter`.
        gt: the COCO ground-truth dict (its ``images`` list and ``categories`` are used).
        image_root: folder the ``file_name`` entries are relative to.
        stages: ``"final"`` (whatever the Segmenter does), or ``"both"`` (requires a refiner): returns the
            stage-1 and refined results.
        progress: show a progress bar.
        batch_size: images per detector forward pass. 1 (default) reproduces :meth:`Segmenter.__call__`
            bit for bit; larger batches change the convolutions' float rounding (oneDNN/cuDNN pick other
            kernels), so a few mask pixels and scores may move by ~1e-6 (worth it on a GPU, not on a CPU).
        work_dir: run through :class:`cartoonseg.sharding.ShardedRun` in this folder: under ``torchrun`` every
            process takes its shards of the images, each finished shard is saved atomically (a killed run resumes
            where it stopped, with any number of processes), and rank 0 merges. The folder is removed after the
            merge. None: everything in this process, nothing saved.
        shard_size: images per shard (with ``work_dir``).
        fingerprint: settings that change the results (model files, thresholds), stored in the run folder's
            manifest so a folder of another run is refused (with ``work_dir``).
        rank: a :class:`cartoonseg.sharding.RankInfo` (default: from the ``torchrun`` environment, starting the
            process group).

    Returns:
        ``{"final": [...]}`` or ``{"stage1": [...], "refined": [...]}``; with ``work_dir`` under ``torchrun``,
        None on ranks other than 0.
    """
    _check(segmenter, stages, batch_size)
    cats = category_ids(gt) or [0]  # as the evaluator scores them
    images = list(gt["images"])
    names = _stage_names(stages)
    if work_dir is None:
        bar = _bar(len(images), 0, progress, None)
        per_image = predict_images(segmenter, images, image_root, cats, stages, batch_size, bar.update)
        bar.close()
    else:
        from ..sharding import ShardedRun, agree, init_distributed

        rank = rank if rank is not None else init_distributed()
        keys = agree([str(im["id"]) for im in images])
        by_id = {str(im["id"]): im for im in images}
        fp = dict(fingerprint or {}, stages=stages, categories=cats)
        run = ShardedRun(work_dir, keys, shard_size=shard_size, fingerprint=fp, rank=rank)
        todo = run.pending()
        total = sum(len(s.keys) for s in run.mine())
        bar = _bar(total, total - sum(len(s.keys) for s in todo), progress, rank)
        with run.reporting_failures():  # a failure here reaches rank 0's wait() (a marker), it does not hang it
            for shard in todo:
                chunk = [by_id[k] for k in shard.keys]
                run.save(shard, predict_images(segmenter, chunk, image_root, cats, stages, batch_size, bar.update))
        bar.close()
        if not rank.is_main:
            return None
        run.wait()
        per_image = run.results()
        run.remove()
    return {name: [r for image in per_image for r in image[name]] for name in names}


def _bar(total: int, done: int, enabled: bool, rank: Any):
    from ..sharding import RankInfo, progress_bar

    return progress_bar(total, done, rank or RankInfo(), "predict", enabled=enabled)
