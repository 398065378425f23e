"""COCO run-length encoding (RLE) and polygon rasterisation in numpy, without pycocotools.

Follows the COCO mask format (cocodataset/cocoapi ``maskApi.c``): a binary ``[H,W]`` mask is read in
**column-major** (Fortran) order as alternating runs of 0s and 1s, starting with 0s. ``counts`` is either a
list of ints ("uncompressed RLE") or the compact ASCII string form: each run is delta-coded against the run two
places back (from the third run on) and written as little-endian 5-bit groups, each char = 48 + group, with
0x20 as the continuation bit and 0x10 of the last group as the sign.

Public helpers: :func:`mask_bbox`, :func:`polygons_to_mask`,
:func:`segmentation_to_mask` (any COCO ``segmentation`` value); the RLE codec itself is :mod:`cartoonseg.rle`,
re-exported here (:func:`encode`, :func:`decode`, :func:`area`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..rle import area, counts_to_string, decode, decode_many, encode, encode_many, string_to_counts

__all__ = [
    "area",
    "counts_to_string",
    "decode",
    "decode_many",
    "encode",
    "encode_many",
    "polygons_to_mask",
    "segmentation_to_mask",
    "string_to_counts",
    "mask_bbox",
]


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
