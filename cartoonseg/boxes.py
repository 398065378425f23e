"""Instance boxes in the formats other tools and ComfyUI packs read (one home for box conversions).

Boxes here are the boxes of the instances' masks (:func:`cartoonseg.structures.fitted_boxes`: after refinement a mask
may reach beyond the detector's box), in image pixels, clamped to the image. Formats:

* ``"bounding_box"``: core ComfyUI's ``BOUNDING_BOX`` (SAM3_Detect, DrawBBoxes, CropByBBoxes in recent core): a list
  per frame of ``{x, y, width, height, score, label, id}`` dicts;
* ``"xyxy"``: ``[x1, y1, x2, y2]`` lists, one list per frame (the ``BBOX`` of kijai's SAM2 ``Sam2Segmentation.bboxes``
  and Florence2 outputs, and of most vision-language box nodes);
* ``"xywh"``: ``[x, y, width, height]`` lists, one flat list over the frames (the ``BBOX`` of KJNodes' crop/uncrop and
  ``BboxToInt`` nodes);
* centres: ``[{"x": ..., "y": ...}]`` (the point prompts of SAM2 ``coordinates_positive``);
* box masks: a filled rectangle per instance (MASK ``[N,H,W]``, for every mask node of core ComfyUI).

Also the project's one pairwise box IoU, :func:`box_iou` (the tracker, the segmenter's box prompts, the detector
training's label assignment).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .structures import Instances, fitted_boxes

__all__ = ["BBOX_FORMATS", "box_iou", "pixel_boxes", "to_bounding_box", "to_bbox", "box_centres", "box_masks"]

BBOX_FORMATS = ("xyxy", "xywh")


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``[N,M]`` of xyxy boxes ``a [N,4]`` and ``b [M,4]`` (areas with offset 0; integer boxes as float32,
    float ones in their own dtype); 0 for a pair whose union is empty (degenerate boxes)."""
    a = a if a.is_floating_point() else a.float()
    b = b if b.is_floating_point() else b.float()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-9), torch.zeros_like(inter))


def pixel_boxes(instances: Instances) -> list[list[int]]:
    """Integer ``[x1, y1, x2, y2]`` of each instance's mask box, clamped to the image (x2/y2 exclusive edges)."""
    h, w = instances.image_size
    out = []
    for x1, y1, x2, y2 in fitted_boxes(instances).tolist():
        x1, y1 = int(max(0.0, min(float(w), x1))), int(max(0.0, min(float(h), y1)))
        x2 = max(x1, min(w, math.ceil(x2)))
        y2 = max(y1, min(h, math.ceil(y2)))
        out.append([x1, y1, x2, y2])
    return out


def to_bounding_box(frames: Sequence[Instances], label_prefix: str = "inst_") -> list[list[dict]]:
    """Core ComfyUI ``BOUNDING_BOX``: a list per frame of ``{x, y, width, height, score, label, id}`` dicts."""
    out = []
    for inst in frames:
        items = []
        for (x1, y1, x2, y2), score, iid in zip(pixel_boxes(inst), inst.scores.tolist(), inst.ids.tolist()):
            items.append({"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1, "score": round(float(score), 6),
                          "label": f"{label_prefix}{int(iid)}", "id": int(iid)})
        out.append(items)
    return out


def to_bbox(frames: Sequence[Instances], fmt: str = "xyxy") -> list:
    """``BBOX`` of other packs: ``"xyxy"`` -> a list per frame of ``[x1, y1, x2, y2]``; ``"xywh"`` -> one flat list
    of ``[x, y, width, height]`` over all frames."""
    if fmt == "xyxy":
        return [pixel_boxes(inst) for inst in frames]
    if fmt == "xywh":
        return [[x1, y1, x2 - x1, y2 - y1] for inst in frames for x1, y1, x2, y2 in pixel_boxes(inst)]
    raise ValueError(f"box format must be one of {BBOX_FORMATS}, got {fmt!r}")


def box_centres(frames: Sequence[Instances]) -> list[dict]:
    """Centre point ``{"x", "y"}`` (integer pixels) of every instance's box, frames in order."""
    return [{"x": (x1 + x2) // 2, "y": (y1 + y2) // 2} for inst in frames for x1, y1, x2, y2 in pixel_boxes(inst)]


def box_masks(frames: Sequence[Instances]) -> Tensor:
    """Filled rectangles, one per instance, frames in order: float32 ``[N,H,W]`` (a ``[1,H,W]`` zero mask when
    there is no instance, as every MASK output of the pack)."""
    if not frames:
        raise ValueError("box_masks needs at least one frame")
    h, w = frames[0].image_size
    masks = []
    for inst in frames:
        if inst.image_size != (h, w):
            raise ValueError(f"frames have different sizes {inst.image_size} and {(h, w)}")
        for x1, y1, x2, y2 in pixel_boxes(inst):
            m = torch.zeros(h, w)
            m[y1:y2, x1:x2] = 1.0
            masks.append(m)
    return torch.stack(masks) if masks else torch.zeros(1, h, w)
