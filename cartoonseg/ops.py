"""Instance operations shared by the applications and the ComfyUI nodes: pure tensor functions over
:class:`~cartoonseg.structures.Instances` and masks (one home; the nodes only adapt ComfyUI types to them).

* selection: :func:`parse_indices` (``"0,2"``, ``"1-3"``, ``"-1"``, ``"all"``), :func:`sort_order`,
  :func:`select_positions`, :func:`select_instances` (one meaning of a selection everywhere: positions a frame
  does not have are skipped);
* masks: :func:`grow_mask` (square dilation / erosion), :func:`disk` (the elliptic structuring element of every
  OpenCV morphology in the library), :func:`background_mask` (union of chosen instances, grown with the original's
  elliptical kernel and feathered: the hole that removes them),
  :func:`masks_to_instances` (any masks -> Instances);
* crops: :func:`crop_window` (integer window around a box), :func:`crop_instances` (padded crops of instances).

Conventions: masks ``[H,W]`` or ``[N,H,W]`` float in [0,1] (or bool); boxes xyxy in image pixels; images float
``[B,H,W,3]`` RGB in [0,1].
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import to_float_mask
from .structures import MATTE_SUPPORT, Instances
from .transforms import resize_float

__all__ = [
    "CROP_FILLS",
    "ORDERS",
    "SELECT_BY",
    "background_mask",
    "crop_instances",
    "crop_window",
    "disk",
    "grow_mask",
    "masks_to_instances",
    "parse_indices",
    "select_instances",
    "select_positions",
    "sort_order",
]

ORDERS: tuple[str, ...] = ("index", "score", "area", "left-to-right", "top-to-bottom", "id")
SELECT_BY: tuple[str, ...] = ("position", "id")
CROP_FILLS: tuple[str, ...] = ("image", "white", "black")


# ---------------------------------------------------------------------------------------------- selection
#: Bounds of a selection text: its length, each position/id (|v|) and the number of entries a selection expands to.
#: A frame never holds this many instances (the segment node stops at 1000), so nothing reachable is refused.
MAX_SELECTION_CHARS = 10_000
MAX_SELECTION_INDEX = 100_000
#: Largest ``dilate`` (pixels) and ``feather`` (Gaussian sigma, pixels) of :func:`background_mask`.
MAX_BACKGROUND_DILATE = 512
MAX_BACKGROUND_FEATHER = 256.0


def parse_indices(text: str) -> list[int] | None:
    """``""``/``"all"`` -> None (everything); ``"0, 2, 4-6, -1"`` -> [0, 2, 4, 5, 6, -1].

    Bounded: the text is at most :data:`MAX_SELECTION_CHARS` characters, every value lies within
    ±:data:`MAX_SELECTION_INDEX` and the expansion holds at most that many entries (``"0-2000000000"`` is a
    ``ValueError``, not a 16 GB list)."""
    text = (text or "").strip()
    if len(text) > MAX_SELECTION_CHARS:
        raise ValueError(f"instance selection is {len(text)} characters long (at most {MAX_SELECTION_CHARS})")
    if text.lower() in ("", "all", "*"):
        return None
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", part)
        try:
            values = [int(m.group(1)), int(m.group(2))] if m else [int(part)]
            if any(abs(v) > MAX_SELECTION_INDEX for v in values):
                raise OverflowError
            if m:
                a, b = values
                if b < a:
                    raise ValueError
                if len(out) + b - a + 1 > MAX_SELECTION_INDEX:
                    raise OverflowError
                out.extend(range(a, b + 1))
            else:
                out.append(values[0])
        except OverflowError:
            raise ValueError(f"instance selection {text[:80]!r} is out of range: positions and ids lie within "
                             f"±{MAX_SELECTION_INDEX} and a selection expands to at most {MAX_SELECTION_INDEX} "
                             f"entries") from None
        except ValueError:
            raise ValueError(f"cannot parse instance selection {text!r}: use e.g. '0', '0,2', '1-3', '-1' or "
                             f"'all'") from None
    return out


def sort_order(inst: Instances, order: str) -> list[int]:
    """Positions of ``inst`` in the requested order (stable): one of :data:`ORDERS`."""
    n = len(inst)
    if order == "index":
        return list(range(n))
    if order == "score":
        key = (-inst.scores.float()).tolist()
    elif order == "area":
        key = (-inst.areas.float()).tolist()
    elif order == "left-to-right":
        key = ((inst.boxes[:, 0] + inst.boxes[:, 2]) / 2).tolist()
    elif order == "top-to-bottom":
        key = ((inst.boxes[:, 1] + inst.boxes[:, 3]) / 2).tolist()
    elif order == "id":
        key = inst.ids.tolist()
    else:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return sorted(range(n), key=lambda i: (key[i], i))


def select_positions(n: int, indices: Sequence[int] | None) -> list[int]:
    """Positions ``0..n-1`` a selection (:func:`parse_indices`) picks among ``n`` items, in the selection's order,
    each once: None = all; negative values count from the end (``-1`` = last); positions the items do not have are
    skipped (a frame with fewer instances, or none, gives fewer positions, never an error)."""
    if indices is None:
        return list(range(n))
    return list(dict.fromkeys(int(i) % n for i in indices if -n <= int(i) < n))


def select_instances(inst: Instances, order: str = "index", indices: Sequence[int] | None = None,
                     select_by: str = "position") -> Instances:
    """Sort, then keep the chosen instances (positions after sorting, or instance ids). Out-of-range positions
    and absent ids are skipped (:func:`select_positions`), so a selection never fails on a frame with fewer
    instances."""
    ordered = sort_order(inst, order)
    if indices is None:
        keep = ordered
    elif select_by == "position":
        keep = [ordered[i] for i in select_positions(len(ordered), indices)]
    elif select_by == "id":
        ids = inst.ids.tolist()
        wanted = set(indices)
        keep = [p for p in ordered if ids[p] in wanted]
    else:
        raise ValueError(f"select_by must be one of {SELECT_BY}, got {select_by!r}")
    keep = list(dict.fromkeys(keep))
    return inst[keep]


# ---------------------------------------------------------------------------------------------- masks
def grow_mask(mask: Tensor, pixels: int) -> Tensor:
    """Dilate (``pixels > 0``) or erode (``< 0``) masks ``[H,W]`` or ``[B,H,W]`` with a ``(2|p|+1)²`` square
    window. Nothing outside the image counts (a mask touching the border stays at the border). A bool mask
    comes back bool, any other float32. The square's maximum is taken along rows, then columns (the same result in
    ``O(|p|)`` per pixel instead of ``O(p²)``, which matters for the wide windows of the Ken Burns inpainting)."""
    p = int(pixels)
    if p == 0:
        return mask
    single, is_bool = mask.dim() == 2, mask.dtype == torch.bool
    x = (mask[None] if single else mask)[:, None].float()
    r = abs(p)
    x = x if p > 0 else -x
    x = F.max_pool2d(x, (1, 2 * r + 1), stride=1, padding=(0, r))
    x = F.max_pool2d(x, (2 * r + 1, 1), stride=1, padding=(r, 0))
    x = x if p > 0 else -x
    x = x[0, 0] if single else x[:, 0]
    return x > 0.5 if is_bool else x


def disk(radius: int) -> np.ndarray:
    """uint8 ``[2r+1, 2r+1]``: the elliptic structuring element (a disc) of ``radius`` pixels for OpenCV's
    morphology (``cv2.dilate``, ``erode``, ``morphologyEx``, or normalised as a filter): one home for the mattes,
    the occlusion cues and the chroma key's clean-up."""
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def background_mask(
    masks,
    *,
    indices: Sequence[int] | None = None,
    threshold: float = 0.5,
    dilate: int = 0,
    feather: float = 0.0,
) -> Tensor:
    """The region to inpaint when removing characters: union of chosen instance masks, dilated and feathered.

    Args:
        masks: a :class:`cartoonseg.Instances` (its soft masks and ``mask_thr`` are used, and with alpha mattes
            every pixel a matte reaches, ``alphas >`` :data:`MATTE_SUPPORT`, so nothing of a character's
            half-transparent edge stays in the plate) or a tensor ``[N,H,W]`` / ``[H,W]`` of soft or binary masks.
        indices: positions of the instances to include (default: all), as Select Instances reads them
            (:func:`select_positions`: ``-1`` = last; positions the masks do not have are skipped, so one selection
            works on every frame of a video).
        threshold: binarisation threshold for tensors (an ``Instances`` uses its own ``mask_thr``).
        dilate: grow the union by this many pixels, 0..512 (elliptical kernel of side ``2*dilate+1``, as the original
            grows its inpainting mask; its diffusion mode uses 5, its tagging pass a 3x3 square). Deliberately not
            :func:`grow_mask`'s square: the Ken Burns plate and the style holes follow the original.
        feather: Gaussian sigma in pixels, 0..256, for a soft edge **outside** the binary region (0 = hard mask). The
            binary region itself stays 1.

    Returns:
        float32 ``[H,W]`` in [0,1], 1 = fill.
    """
    import cv2

    mattes = None
    if isinstance(masks, Instances):
        m, thr, mattes = masks.masks, masks.mask_thr, masks.alphas
    elif isinstance(masks, (Tensor, np.ndarray)):
        m = torch.as_tensor(masks)
        thr = threshold
    else:
        raise TypeError(f"masks must be Instances or a tensor [N,H,W], got {type(masks).__name__}")
    if m.dim() == 2:
        m = m[None]
    if m.dim() != 3:
        raise ValueError(f"masks must be [N,H,W], got shape {tuple(m.shape)}")
    if not 0 <= dilate <= MAX_BACKGROUND_DILATE:  # also refuses NaN
        raise ValueError(f"dilate must lie in [0, {MAX_BACKGROUND_DILATE}] pixels, got {dilate}")
    if not 0.0 <= feather <= MAX_BACKGROUND_FEATHER:
        raise ValueError(f"feather must lie in [0, {MAX_BACKGROUND_FEATHER:g}] pixels, got {feather}")
    m = m.detach().cpu()
    if m.dtype != torch.bool:
        m = torch.nan_to_num(m.float(), nan=0.0) > thr
    if mattes is not None:  # every pixel the character touches: a hair strand past the mask, a faint edge
        m = m | (torch.nan_to_num(mattes.detach().cpu().float(), nan=0.0) > MATTE_SUPPORT)
    if indices is not None:
        m = m[select_positions(m.shape[0], indices)]
    union = m.any(0) if m.shape[0] else torch.zeros(m.shape[1:], dtype=torch.bool)
    out = union.numpy().astype(np.uint8)
    if dilate > 0 and out.any():
        out = cv2.dilate(out, disk(dilate))
    result = torch.from_numpy(out.astype(np.float32))
    if feather > 0 and out.any():
        k = math.ceil(3 * feather) * 2 + 1
        blurred = torch.from_numpy(cv2.GaussianBlur(out.astype(np.float32), (k, k), feather))
        # soft ramp outside only: never weaken the binary region
        result = torch.maximum(result, (blurred * 2).clamp(0, 1))
    return result


def masks_to_instances(masks: Tensor, mask_threshold: float = 0.5, split_components: bool = False,
                       min_area: int = 1) -> Instances:
    """Masks ``[N,H,W]`` (soft or binary) -> :class:`Instances` of one image; empty masks are dropped,
    optionally every connected component of a mask becomes its own instance (components smaller than
    ``min_area`` pixels are dropped). Scores are 1.0; the soft values are kept as mask probabilities."""
    import cv2

    masks = to_float_mask(masks, name="masks")  # uint8 0..255 (a 0/255 mask equals the float 0/1 one), bool 0/1
    h, w = masks.shape[-2:]
    keep = []
    for m in masks:
        b = m > mask_threshold
        if not split_components:
            if int(b.sum()) >= max(1, min_area):
                keep.append(m)
            continue
        count, labels = cv2.connectedComponents(b.numpy().astype(np.uint8), connectivity=8)
        labels = torch.from_numpy(labels)
        for c in range(1, count):
            comp = labels == c
            if int(comp.sum()) >= max(1, min_area):
                keep.append(torch.where(comp, m, torch.zeros_like(m)))
    if not keep:
        return Instances.empty(h, w, mask_thr=mask_threshold)
    return Instances.from_masks(torch.stack(keep).float(), mask_thr=mask_threshold)


# ---------------------------------------------------------------------------------------------- crops
def crop_window(box, height: int, width: int, padding: int = 0, *,
                allow_empty: bool = False) -> tuple[int, int, int, int]:
    """Integer window ``(x1, y1, x2, y2)`` (x2/y2 exclusive) of a box xyxy: edges rounded outwards, grown by
    ``padding`` px and clamped to the image. At least 1x1 unless ``allow_empty`` (then a box outside the image
    gives ``x2 <= x1`` or ``y2 <= y1``)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, y1 = math.floor(x1) - padding, math.floor(y1) - padding
    x2, y2 = math.ceil(x2) + padding, math.ceil(y2) + padding
    if allow_empty:
        x1, y1 = max(0, min(width, x1)), max(0, min(height, y1))
        return x1, y1, max(x1, min(width, x2)), max(y1, min(height, y2))
    x1, y1 = max(0, min(width - 1, x1)), max(0, min(height - 1, y1))
    return x1, y1, max(x1 + 1, min(width, x2)), max(y1 + 1, min(height, y2))


def _fit(t: Tensor, size: int) -> Tensor:
    """Resize ``[C,h,w]`` so the longer side is ``size`` (aspect kept)."""
    _, h, w = t.shape
    s = size / max(h, w)
    return resize_float(t, (max(1, round(h * s)), max(1, round(w * s))))


def crop_instances(image: Tensor | None, frame_masks: Sequence[tuple[int, Tensor, Tensor]], padding: int,
                   crop_size: int, fill: str) -> tuple[Tensor, Tensor]:
    """Crops of instances, batched.

    Args:
        image: IMAGE ``[B,H,W,3]`` or None (then the crop shows the mask in white on black).
        frame_masks: ``(frame index, box [4], mask [H,W])`` per instance.
        padding: pixels added around each box.
        crop_size: 0 = natural size, all crops padded (bottom/right) to the largest; > 0 = each crop resized to
            fit a ``crop_size`` square and centred on it.
        fill: ``"image"`` keeps the pixels around the instance; ``"white"``/``"black"`` replace them.

    Returns:
        IMAGE ``[K,h,w,3]`` and MASK ``[K,h,w]`` (the instance's mask in the crop; 0 in padding added to reach
        the common size).
    """
    if fill not in CROP_FILLS:
        raise ValueError(f"crop_fill must be one of {CROP_FILLS}, got {fill!r}")
    crops, cmasks = [], []
    for fi, box, mask in frame_masks:
        h, w = mask.shape
        x1, y1, x2, y2 = crop_window(box, h, w, padding)
        m = mask[y1:y2, x1:x2].float()  # bool masks too (the module's convention)
        img = image[fi, y1:y2, x1:x2, :3].permute(2, 0, 1) if image is not None else m[None].expand(3, -1, -1)
        if fill != "image":
            bg = 1.0 if fill == "white" else 0.0
            img = img * m[None] + bg * (1 - m[None])
        crops.append(img)
        cmasks.append(m[None])
    if crop_size > 0:
        crops = [_fit(c, crop_size) for c in crops]
        cmasks = [_fit(c, crop_size) for c in cmasks]
        th = tw = crop_size
    else:
        th = max(c.shape[1] for c in crops)
        tw = max(c.shape[2] for c in crops)
    out_i = torch.zeros(len(crops), 3, th, tw)
    out_m = torch.zeros(len(crops), th, tw)
    bg = 1.0 if fill == "white" else 0.0
    for k, (c, cm) in enumerate(zip(crops, cmasks)):
        h, w = c.shape[1:]
        oy, ox = ((th - h) // 2, (tw - w) // 2) if crop_size > 0 else (0, 0)
        if fill != "image":
            out_i[k] = bg
        out_i[k, :, oy:oy + h, ox:ox + w] = c
        out_m[k, oy:oy + h, ox:ox + w] = cm[0]
    return out_i.permute(0, 2, 3, 1).clamp(0, 1).contiguous(), out_m.clamp(0, 1).contiguous()
