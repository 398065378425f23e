"""Region geometry for instance-aware style editing: crop-with-context planning, paint order, de-duplication,
feathered paste-back through soft masks.

Follows the per-instance "inpaint only masked" flow of the authors' ``run_style.py`` / ``repaint_person.py``:
each instance is cropped by its box grown by a padding (32 px there),
processed at a working resolution, scaled back and pasted through its mask blurred by ``mask_blur`` (4 there).
Differences, on purpose:

* the crop keeps its own aspect ratio; the working size is the crop scaled so its long side equals ``resolution``
  and rounded to a multiple of 8 (instead of stretching the crop to a fixed canvas);
* the feather only grows *outwards*: ``alpha = max(mask, blur(mask))``, so every pixel of the soft mask is pasted
  with at least its own mask value and pixels farther than ``ceil(2*feather)`` px from the mask never change;
  soft-mask values below one 8-bit level (1/255) count as zero so near-zero probabilities cannot leak;
* overlaps are resolved by painting back to front (far first): where two instances touch, as the picture shows
  them (the occlusion cue, :func:`occlusion`), else by per-instance depth when known, else by the ground line.

Images here are float ``[H,W,3]`` RGB in [0,1]; masks float ``[H,W]`` or ``[N,H,W]`` in [0,1]; boxes xyxy px.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..occlusion import (  # noqa: F401 - re-exported (their home is cartoonseg.occlusion)
    JUNCTION_RADIUS,
    OCCLUSION_MARGIN,
    Window,
    in_front,
    mask_windows,
    occlusion,
    occlusion_order,
)
from ..ops import crop_window
from ..structures import masks_to_boxes
from ..transforms import resize_image, resize_mask  # noqa: F401 - re-exported (their home is transforms)
from .hints import gaussian_blur

__all__ = [
    "ALPHA_FLOOR",
    "JUNCTION_RADIUS",
    "OCCLUSION_MARGIN",
    "ORDERS",
    "CropPlan",
    "dedupe_masks",
    "feather_alpha",
    "in_front",
    "mask_windows",
    "occlusion",
    "occlusion_order",
    "paint_order",
    "paste",
    "plan_crop",
    "resize_image",
    "resize_mask",
    "rule_order",
    "work_size",
]

ALPHA_FLOOR = 1.0 / 255.0
ORDERS: tuple[str, ...] = ("auto", "depth", "bottom", "index")


@dataclasses.dataclass(frozen=True)
class CropPlan:
    """A crop of the image and the size it is sampled at.

    Attributes:
        box: int ``(x1, y1, x2, y2)`` inside the image, x2/y2 exclusive.
        work_hw: ``(height, width)`` the crop is resized to for sampling (multiples of ``multiple``).
    """

    box: tuple[int, int, int, int]
    work_hw: tuple[int, int]

    @property
    def crop_hw(self) -> tuple[int, int]:
        x1, y1, x2, y2 = self.box
        return y2 - y1, x2 - x1


def work_size(height: int, width: int, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """Working size for a region of ``height x width`` px: scaled so the long side is ``resolution``
    (``resolution == 0`` keeps the native size), each side rounded to a multiple of ``multiple`` (at least one)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"region must be non-empty, got {height}x{width}")
    if resolution < 0 or multiple < 1:
        raise ValueError(f"resolution must be >= 0 and multiple >= 1, got {resolution}, {multiple}")
    scale = 1.0 if resolution == 0 else resolution / max(height, width)
    h = max(multiple, round(height * scale / multiple) * multiple)
    w = max(multiple, round(width * scale / multiple) * multiple)
    return h, w


def plan_crop(
    mask: Tensor,
    *,
    padding: int = 32,
    feather: float = 4.0,
    resolution: int = 768,
    multiple: int = 8,
    threshold: float = 0.5,
) -> CropPlan | None:
    """Crop-with-context for one soft mask ``[H,W]``.

    The crop is the tight box of ``mask > threshold`` grown by ``max(padding, reach)`` px on each side, where
    ``reach = ceil(2*feather) + 1`` makes sure the whole feather band lies inside the crop, then clipped to the
    image. Returns None when the mask is empty at ``threshold``.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [H,W], got shape {tuple(mask.shape)}")
    if padding < 0 or feather < 0:
        raise ValueError(f"padding and feather must be >= 0, got {padding}, {feather}")
    fg = mask > threshold
    if not bool(fg.any()):
        return None
    h, w = mask.shape
    grow = max(int(padding), math.ceil(2 * feather) + 1 if feather > 0 else 0)
    x1, y1, x2, y2 = crop_window(masks_to_boxes(fg[None])[0].tolist(), h, w, grow, allow_empty=True)
    return CropPlan(box=(x1, y1, x2, y2), work_hw=work_size(y2 - y1, x2 - x1, resolution, multiple))


def feather_alpha(mask: Tensor, feather: float) -> Tensor:
    """Paste alpha of a soft mask ``[...,H,W]``: ``max(mask, blur(mask))`` with a Gaussian of std ``feather`` px
    truncated at 2 std, values below :data:`ALPHA_FLOOR` set to 0. ``feather == 0`` gives the floored mask."""
    m = torch.nan_to_num(mask.float(), nan=0.0).clamp(0, 1)
    if feather > 0:
        shape = m.shape
        blurred = gaussian_blur(m.reshape(-1, 1, *shape[-2:]), feather).reshape(shape)
        m = torch.maximum(m, blurred)
    return torch.where(m < ALPHA_FLOOR, torch.zeros_like(m), m)


def paste(canvas: Tensor, patch: Tensor, box: tuple[int, int, int, int], alpha: Tensor) -> Tensor:
    """Blend ``patch [h,w,3]`` into ``canvas [H,W,3]`` at ``box`` through ``alpha [h,w]`` (a new tensor).

    Pixels where ``alpha == 0`` (and everything outside ``box``) are returned bit-identical."""
    x1, y1, x2, y2 = box
    if patch.shape[:2] != (y2 - y1, x2 - x1) or alpha.shape != (y2 - y1, x2 - x1):
        raise ValueError(
            f"patch {tuple(patch.shape)} / alpha {tuple(alpha.shape)} do not match box {box} of size "
            f"{y2 - y1}x{x2 - x1}"
        )
    out = canvas.clone()
    region = out[y1:y2, x1:x2]
    a = alpha[..., None].to(region.dtype)
    blended = region * (1 - a) + patch.to(region.dtype) * a
    out[y1:y2, x1:x2] = torch.where(a > 0, blended, region)
    return out


def paint_order(
    masks: Tensor,
    boxes: Tensor,
    depth: Sequence[float | None] | None = None,
    order: str = "auto",
) -> list[int]:
    """Back-to-front painting order of ``N`` instances (the last one painted wins overlaps).

    Args:
        masks: ``[N,H,W]`` soft masks (the area tie-break; with ``"auto"`` also the occlusion cue, read at 0.5).
        boxes: ``[N,4]`` xyxy px.
        depth: optional per-instance depth, **larger = nearer** (the pack's disparity-like convention,
            ``Instances.extras["depth"]``); None or NaN (depth pooling's value for an empty mask) = unknown.
        order: ``"auto"``: two instances that touch are ordered as the picture shows them (:func:`in_front`: the
            one more confident where the masks overlap, else the one whose outline runs on unbroken where they meet
            is in front), the rest, and touching ones the cues cannot order (masks that overlap in full, equally
            confident), by depth when every instance has a known one, else by
            ``"bottom"``; ``"depth"`` (ascending depth alone; error when one is unknown), ``"bottom"``
            (ground-contact rule alone: the box whose bottom edge is higher is farther; ties: larger area first),
            ``"index"`` (as given).
    """
    if masks.dim() != 3 or boxes.shape[:1] != masks.shape[:1]:
        raise ValueError(f"masks must be [N,H,W] and boxes [N,4] for the same N, got {tuple(masks.shape)} and "
                         f"{tuple(boxes.shape)}")
    n = int(masks.shape[0])
    areas = masks.flatten(1).sum(1).tolist() if n else []
    base = rule_order(boxes, areas, depth, order)
    return occlusion_order(base, mask_windows(masks)) if order == "auto" and n > 1 else base


def rule_order(
    boxes: Tensor | Sequence[Sequence[float]],
    areas: Sequence[float],
    depth: Sequence[float | None] | None = None,
    order: str = "auto",
) -> list[int]:
    """Back-to-front order of ``N`` layers by :func:`paint_order`'s named rules alone, from their boxes and areas
    (no masks: the occlusion cue is not applied; :func:`occlusion_order` refines the result where layers touch).

    Args:
        boxes: ``[N,4]`` xyxy px (only the bottom edge is read).
        areas: ``N`` areas (the tie-break: larger first).
        depth: as :func:`paint_order`'s; a list must have one entry per layer.
        order: ``"auto"`` (``"depth"`` when every layer has a known depth, else ``"bottom"``), ``"depth"``,
            ``"bottom"`` or ``"index"``, as :func:`paint_order` describes them.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown paint order {order!r}; allowed: {', '.join(ORDERS)}")
    bottoms = [float(b[3]) for b in (boxes.tolist() if isinstance(boxes, Tensor) else boxes)]
    n = len(bottoms)
    if len(areas) != n:
        raise ValueError(f"need one area per box: got {len(areas)} areas for {n} boxes")
    if depth is not None and len(depth) != n:  # it used to be ignored quietly ("auto" fell back to the ground rule)
        raise ValueError(f"depth must have one entry (or None) per instance: got {len(depth)} for {n} instances")
    have_depth = depth is not None and all(d is not None and d == d for d in depth)  # NaN != NaN
    if order == "depth" and not have_depth:
        raise ValueError('paint order "depth" needs a known extras["depth"] (not None or NaN) for every instance '
                         '(run CartoonSegDepthPool)')
    if order == "index":
        return list(range(n))
    areas = [float(a) for a in areas]
    if order == "depth" or (order == "auto" and have_depth):
        return sorted(range(n), key=lambda i: (float(depth[i]), -areas[i], i))  # type: ignore[index]
    return sorted(range(n), key=lambda i: (bottoms[i], -areas[i], i))


def dedupe_masks(masks: Tensor, threshold: float = 0.8, mask_thr: float = 0.5) -> list[int]:
    """Indices of instances to keep: going from the largest mask down, drop a mask when more than
    ``threshold`` of its area lies inside the union of the masks already kept (``repaint_person.py``'s
    ``remove_duplicated`` rule). ``threshold >= 1`` keeps everything; empty masks are dropped."""
    n = int(masks.shape[0])
    if threshold >= 1.0:
        return list(range(n))
    fg = masks > mask_thr
    areas = fg.flatten(1).sum(1)
    keep: list[int] = []
    covered = torch.zeros(masks.shape[1:], dtype=torch.bool, device=masks.device)
    for i in sorted(range(n), key=lambda j: (-int(areas[j]), j)):
        a = int(areas[i])
        if a == 0:
            continue
        if int((fg[i] & covered).sum()) > threshold * a:
            continue
        keep.append(i)
        covered |= fg[i]
    return sorted(keep)
