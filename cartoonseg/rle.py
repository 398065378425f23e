"""COCO run-length encoding (RLE) of binary masks, and COCO polygons/segmentations as masks, in plain numpy (no
pycocotools): the one RLE module of the package (dataset synthesis, the ``segment`` CLI, evaluation, training).

Follows the format of the COCO API (``pycocotools.mask``, cocodataset/cocoapi ``maskApi.c``), so files written
here load with pycocotools and vice versa:

* a mask ``[H,W]`` is scanned in **column-major** (Fortran) order;
* ``counts`` alternate run lengths of 0s and 1s, **starting with 0s** (a leading 0-length run when the first
  pixel is set);
* the *compressed* form stores ``counts`` as an ASCII string: every count after the second is stored as the
  difference to the count two places before it, then written in little-endian groups of 5 bits, each group
  offset by 48 with bit ``0x20`` meaning "more groups follow" (sign carried by bit ``0x10`` of the last group);
* the *uncompressed* form (used by COCO for ``iscrowd`` annotations) stores ``counts`` as a list of ints.

The synthesiser writes ``{"size": [H, W], "counts": "<compressed string>"}``, exactly what
``pycocotools.mask.encode`` produces after ``counts.decode()`` (the original CartoonSegmentation writer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "area",
    "counts_to_string",
    "decode",
    "encode",
    "mask_bbox",
    "mask_counts",
    "polygons_to_mask",
    "segmentation_to_mask",
    "string_to_counts",
    "to_bbox",
]


def mask_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a binary mask ``[H,W]`` in COCO order (column-major, starting with a run of zeros)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE encoding needs a 2-D mask [H,W], got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs]


def counts_to_string(counts: list[int]) -> str:
    """Compress run lengths into the COCO ASCII string (LEB128-like 5-bit groups with delta coding)."""
    out = bytearray()
    for i, count in enumerate(counts):
        x = int(count)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas keep their sign
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(c + 48)
    return out.decode("ascii")


def string_to_counts(text: str | bytes) -> list[int]:
    """Inverse of :func:`counts_to_string`."""
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    counts: list[int] = []
    pos = 0
    n = len(data)
    while pos < n:
        x = 0
        k = 0
        more = True
        while more:
            if pos >= n:
                raise ValueError("truncated COCO RLE string: the last count has no terminating group")
            c = data[pos] - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {chr(data[pos])!r} in a COCO RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            pos += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Binary mask ``[H,W]`` (any dtype, nonzero = set) -> ``{"size": [H, W], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE encoding needs a 2-D mask [H,W], got shape {mask.shape}")
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(mask_counts(mask))}


def _counts_of(rle: Mapping[str, Any]) -> tuple[int, int, list[int]]:
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise TypeError(f"a COCO RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts)
    else:
        counts = [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise ValueError("negative run length in COCO RLE")
    if sum(counts) != h * w:
        raise ValueError(f"COCO RLE counts sum to {sum(counts)}, expected H*W = {h}*{w} = {h * w}")
    return h, w, counts


def decode(rle: Mapping[str, Any]) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list ``counts``) -> ``uint8 [H,W]`` mask of 0/1."""
    h, w, counts = _counts_of(rle)
    values = np.zeros(len(counts), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy() if h * w else np.zeros((h, w), np.uint8)


def area(rle: Mapping[str, Any]) -> int:
    """Number of set pixels of a COCO RLE (sum of the odd runs)."""
    _, _, counts = _counts_of(rle)
    return int(sum(counts[1::2]))


def to_bbox(rle: Mapping[str, Any]) -> list[float]:
    """Tight box ``[x, y, w, h]`` (COCO xywh, pixels) of a COCO RLE; all zeros when empty."""
    mask = decode(rle)
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


# ---------------------------------------------------------------------------------------------- masks and polygons
def mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight COCO box ``[x, y, w, h]`` of a binary mask (pixel edges, like pycocotools ``toBbox``)."""
    mask = np.asarray(mask, dtype=bool)
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    if ys.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs[0]), float(ys[0]), float(xs[-1] + 1 - xs[0]), float(ys[-1] + 1 - ys[0])]


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (lists ``[x0, y0, x1, y1, ...]`` in pixel coordinates) into a uint8 mask.

    Uses OpenCV's scan conversion with 1/16-pixel sub-pixel precision; pixel edges may differ from
    pycocotools' ``frPoly`` by at most one pixel along the outline.
    """
    import cv2

    mask = np.zeros((int(height), int(width)), dtype=np.uint8)
    shift = 4
    pts = []
    for poly in polygons:
        arr = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if arr.shape[0] < 3:
            continue
        # COCO polygon vertices are on pixel corners; OpenCV's are pixel centres.
        pts.append(np.round((arr - 0.5) * (1 << shift)).astype(np.int32))
    if pts:
        cv2.fillPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=shift)
    return mask


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    """Any COCO ``segmentation`` value (polygon list, RLE dict with str or list counts) -> uint8 mask, or
    ``None`` when it is missing/empty/invalid (callers fall back to the box, see the ignore-mask rule)."""
    if segmentation is None:
        return None
    try:
        if isinstance(segmentation, dict):
            if isinstance(segmentation.get("counts"), list) and "size" not in segmentation:
                return None
            mask = decode(segmentation)
            if mask.shape != (int(height), int(width)):
                raise ValueError(f"RLE size {mask.shape} differs from the image size {(height, width)}")
            return mask
        if isinstance(segmentation, (list, tuple)):
            if not segmentation:
                return None
            return polygons_to_mask(segmentation, height, width)
    except ValueError:
        return None
    return None
