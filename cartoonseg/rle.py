"""COCO run-length encoding of binary masks (the compressed-string format of pycocotools' ``maskApi``),
written here in numpy so the library needs no pycocotools.

``encode(mask)`` -> ``{"size": [h, w], "counts": str}``; ``decode(rle)`` -> bool ``[h, w]``. Runs are counted in
column-major order starting with background, as COCO does.
"""

from __future__ import annotations

import numpy as np

__all__ = ["encode", "decode", "counts_to_string", "string_to_counts", "area"]


def _runs(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return runs


def counts_to_string(counts: list[int]) -> str:
    """pycocotools ``rleToString``: delta against the count two back, 5-bit groups, offset 48."""
    out = []
    for i, value in enumerate(counts):
        x = int(value) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(s: str) -> list[int]:
    """Inverse of :func:`counts_to_string`."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict:
    """Binary mask ``[h, w]`` -> COCO compressed RLE ``{"size": [h, w], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode expects one mask [h, w], got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(_runs(mask))}


def decode(rle: dict) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> bool mask ``[h, w]``."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    total = sum(counts)
    if total != h * w:
        raise ValueError(f"RLE counts sum to {total}, expected {h * w} for size {h}x{w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def area(rle: dict) -> int:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    return int(sum(counts[1::2]))
