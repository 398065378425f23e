"""COCO run-length encoding (RLE) of binary masks, in plain numpy.

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

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["encode", "decode", "area", "to_bbox", "counts_to_string", "string_to_counts", "mask_counts"]


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
    size = rle["size"]
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise ValueError(f"COCO RLE size must be [H, W], got {size!r}")
    h, w = (int(v) for v in size)
    from .io import MAX_PIXELS

    if h < 0 or w < 0 or h * w > MAX_PIXELS:
        raise ValueError(f"COCO RLE size {h}x{w} is negative or over the {MAX_PIXELS}-pixel image limit")
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
