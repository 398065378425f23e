"""COCO run-length encoding (RLE) and polygon rasterisation in numpy, without pycocotools.

Follows the COCO mask format (cocodataset/cocoapi ``maskApi.c``): a binary ``[H,W]`` mask is read in
**column-major** (Fortran) order as alternating runs of 0s and 1s, starting with 0s. ``counts`` is either a
list of ints ("uncompressed RLE") or the compact ASCII string form: each run is delta-coded against the run two
places back (from the third run on) and written as little-endian 5-bit groups, each char = 48 + group, with
0x20 as the continuation bit and 0x10 of the last group as the sign.

Public helpers: :func:`encode`, :func:`decode`, :func:`area`, :func:`to_bbox`, :func:`polygons_to_mask`,
:func:`segmentation_to_mask` (any COCO ``segmentation`` value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

__all__ = [
    "area",
    "counts_to_string",
    "decode",
    "encode",
    "polygons_to_mask",
    "segmentation_to_mask",
    "string_to_counts",
    "to_bbox",
]


def _runs(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return runs


def counts_to_string(counts: Sequence[int]) -> str:
    """Compress a list of run lengths into the COCO ASCII form."""
    out = []
    counts = [int(c) for c in counts]
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            group = x & 0x1F
            x >>= 5
            more = not ((x == 0 and not group & 0x10) or (x == -1 and group & 0x10))
            if more:
                group |= 0x20
            out.append(chr(group + 48))
    return "".join(out)


def string_to_counts(text: str | bytes) -> list[int]:
    """Inverse of :func:`counts_to_string`."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    counts: list[int] = []
    pos = 0
    n = len(text)
    while pos < n:
        x = 0
        k = 0
        more = True
        while more:
            if pos >= n:
                raise ValueError("truncated COCO RLE string")
            group = ord(text[pos]) - 48
            x |= (group & 0x1F) << (5 * k)
            more = bool(group & 0x20)
            pos += 1
            k += 1
            if not more and group & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Binary mask ``[H,W]`` -> ``{"size": [H, W], "counts": str}`` (compressed RLE, str counts)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle.encode expects a 2-D mask [H,W], got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(_runs(mask))}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts or uncompressed list) -> uint8 mask ``[H,W]`` of 0/1."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a COCO RLE dict (needs 'size' [H,W] and 'counts'): {rle!r:.120}") from exc
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and (counts < 0).any():
        raise ValueError("COCO RLE has negative run lengths")
    total = int(counts.sum())
    if total != h * w:
        raise ValueError(f"COCO RLE runs cover {total} pixels but size {h}x{w} has {h * w}")
    values = np.zeros(counts.size, dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def area(rle: dict[str, Any]) -> int:
    """Foreground pixel count of an RLE."""
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts)
    return int(sum(counts[1::2]))


def to_bbox(mask: np.ndarray) -> list[float]:
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
