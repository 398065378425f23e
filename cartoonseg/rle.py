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

from .io import MAX_PIXELS
from .structures import check_mask_budget

__all__ = [
    "area",
    "counts_to_string",
    "decode",
    "decode_many",
    "encode",
    "encode_many",
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


def _strings_of(counts: np.ndarray, splits: np.ndarray) -> list[str]:
    """Vectorised :func:`counts_to_string` over many masks at once.

    Args:
        counts: all masks' run lengths concatenated (int64).
        splits: ``[N+1]`` start offsets of each mask's runs in ``counts`` (last = ``len(counts)``).
    """
    x = counts.astype(np.int64)
    idx = np.arange(len(x)) - np.repeat(splits[:-1], np.diff(splits))  # position of each run in its mask
    delta = idx > 2
    x[delta] -= counts[np.flatnonzero(delta) - 2]
    groups = np.zeros((len(x), 8), np.uint8)  # 8 groups of 5 bits hold any int40
    length = np.zeros(len(x), np.int64)
    active = np.ones(len(x), bool)
    for k in range(8):
        c = x & 0x1F
        x = x >> 5  # arithmetic shift: negative deltas keep their sign
        more = np.where(c & 0x10, x != -1, x != 0) & active
        groups[:, k] = (c | (more.astype(np.int64) << 5)) + 48
        length += active
        active = more
        if not active.any():
            break
    chars = groups[np.arange(8)[None, :] < length[:, None]]  # row-major: each run's groups in order
    ends = np.concatenate(([0], np.cumsum(length)))[splits]
    data = chars.tobytes()
    return [data[a:b].decode("ascii") for a, b in zip(ends[:-1], ends[1:])]


def encode_many(masks: np.ndarray) -> list[dict[str, Any]]:
    """:func:`encode` of every mask of ``[N,H,W]`` (any dtype, nonzero = set), vectorised: one pass of numpy over
    the whole stack instead of a Python loop per run. Output equals ``[encode(m) for m in masks]``."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"encode_many needs masks [N,H,W], got shape {masks.shape}")
    n, h, w = masks.shape
    if n == 0:
        return []
    size = [int(h), int(w)]
    if h * w == 0:
        return [{"size": size, "counts": counts_to_string([0])} for _ in range(n)]
    m = np.asarray(masks, dtype=bool)
    hw = h * w
    # Changes between consecutive pixels of the column-major scan, found without transposing the stack:
    # (y-1, x) -> (y, x) inside a column, and (h-1, x-1) -> (0, x) across a column break. Sorting the (few)
    # change positions then gives each mask's run boundaries in scan order.
    parts = [np.zeros(0, np.int64)]
    if h > 1:
        k, rem = np.divmod(np.flatnonzero(m[:, 1:, :] != m[:, :-1, :]), (h - 1) * w)
        y, x = np.divmod(rem, w)
        parts.append(k * hw + x * h + y + 1)
    if w > 1:
        k, x = np.divmod(np.flatnonzero(m[:, 0, 1:] != m[:, h - 1, :-1]), w - 1)
        parts.append(k * hw + (x + 1) * h)
    rows, change = np.divmod(np.sort(np.concatenate(parts)), hw)  # change: scan position where a run starts
    per_mask = np.bincount(rows, minlength=n)
    first = np.concatenate(([0], np.cumsum(per_mask)[:-1]))  # offset of each mask's changes in ``change``
    ends = np.insert(change, np.cumsum(per_mask), h * w)  # each mask: its change positions, then h*w
    starts = np.insert(change, first, 0)  # each mask: 0, then its change positions
    counts = ends - starts  # per mask: per_mask + 1 runs, the first one of 0s
    block = first + np.arange(n)  # offset of each mask's runs in ``counts``
    lead = m[:, 0, 0]  # a mask whose first pixel is set starts with a 0-length run of 0s
    counts = np.insert(counts, block[lead], 0)
    splits = np.concatenate(([0], np.cumsum(per_mask + 1 + lead)))
    strings = _strings_of(counts, splits)
    return [{"size": size, "counts": c} for c in strings]


def _counts_of_strings(data: bytes, char_splits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`string_to_counts` of several strings concatenated in ``data``.

    Args:
        data: the strings' bytes, one after the other.
        char_splits: ``[N+1]`` start offsets of each string in ``data`` (last = ``len(data)``).

    Returns:
        (all run lengths concatenated, ``[N+1]`` start offsets of each string's runs).
    """
    n = len(char_splits) - 1
    c = np.frombuffer(data, np.uint8).astype(np.int64) - 48
    bad = np.flatnonzero((c < 0) | (c >= 64))
    if bad.size:
        raise ValueError(f"invalid character {chr(data[int(bad[0])])!r} in a COCO RLE string")
    last = (c & 0x20) == 0
    lengths = np.diff(char_splits)
    nonempty = lengths > 0
    if (~last[char_splits[1:][nonempty] - 1]).any():
        raise ValueError("truncated COCO RLE string: the last count has no terminating group")
    ends = np.flatnonzero(last)  # last group of each value
    starts = np.concatenate(([0], ends[:-1] + 1))
    size = ends - starts + 1
    x = np.zeros(len(ends), np.int64)
    for k in range(int(size.max()) if size.size else 0):
        sel = size > k
        x[sel] |= (c[starts[sel] + k] & 0x1F) << (5 * k)
    neg = (c[ends] & 0x10) != 0
    x[neg] |= np.int64(-1) << (5 * size[neg])
    owner = np.searchsorted(char_splits[1:], ends, side="right")  # string each value belongs to
    value_splits = np.concatenate(([0], np.cumsum(np.bincount(owner, minlength=n))))
    # undo the delta coding inside each string: c[i] = x[i] + c[i-2] for i > 2, i.e. a running sum along the odd
    # positions and along the even positions from 2 on
    i = np.arange(len(x)) - value_splits[owner]
    chain = owner * 3 + np.where(i == 0, 0, np.where(i % 2 == 1, 1, 2))  # sorted order is owner, then position
    order = np.argsort(chain, kind="stable")
    xs = x[order]
    csum = np.cumsum(xs)
    key = chain[order]
    first = np.concatenate(([True], key[1:] != key[:-1]))
    base = np.maximum.accumulate(np.where(first, np.arange(len(xs)), 0))
    run = csum - csum[base] + xs[base]
    counts = np.empty_like(x)
    counts[order] = run
    return counts, value_splits


def _counts_from_string(data: bytes) -> np.ndarray:
    """Vectorised :func:`string_to_counts` (same errors)."""
    counts, _ = _counts_of_strings(data, np.array([0, len(data)], np.int64))
    return counts


def string_to_counts(text: str | bytes) -> list[int]:
    """Inverse of :func:`counts_to_string` (vectorised)."""
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    return _counts_from_string(data).tolist()


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Binary mask ``[H,W]`` (any dtype, nonzero = set) -> ``{"size": [H, W], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE encoding needs a 2-D mask [H,W], got shape {mask.shape}")
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(mask_counts(mask))}


def _counts_array(rle: Mapping[str, Any]) -> tuple[int, int, np.ndarray]:
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise TypeError(f"a COCO RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    size = rle["size"]
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise ValueError(f"COCO RLE size must be [H, W], got {size!r}")
    h, w = (int(v) for v in size)
    if h < 0 or w < 0 or h * w > MAX_PIXELS:
        raise ValueError(f"COCO RLE size {h}x{w} is negative or over the {MAX_PIXELS}-pixel image limit")
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _counts_from_string(counts.encode("ascii") if isinstance(counts, str) else bytes(counts))
    else:
        counts = np.asarray([int(c) for c in counts], dtype=np.int64)
    if (counts < 0).any():
        raise ValueError("negative run length in COCO RLE")
    if int(counts.sum()) != h * w:
        raise ValueError(f"COCO RLE counts sum to {int(counts.sum())}, expected H*W = {h}*{w} = {h * w}")
    return h, w, counts


def _counts_of(rle: Mapping[str, Any]) -> tuple[int, int, list[int]]:
    h, w, counts = _counts_array(rle)
    return h, w, counts.tolist()


def decode(rle: Mapping[str, Any]) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list ``counts``) -> ``uint8 [H,W]`` mask of 0/1."""
    h, w, counts = _counts_array(rle)
    values = np.zeros(len(counts), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy() if h * w else np.zeros((h, w), np.uint8)


def decode_many(rles: list[Mapping[str, Any]]) -> np.ndarray:
    """``[N,H,W]`` uint8 masks of RLEs that share one size, decoded in one vectorised pass (equal to
    ``np.stack([decode(r) for r in rles])``); ``[0,0,0]`` for an empty list."""
    if not rles:
        return np.zeros((0, 0, 0), np.uint8)
    for r in rles:
        if not isinstance(r, Mapping) or "size" not in r or "counts" not in r:
            raise TypeError(f"a COCO RLE must be a dict with 'size' and 'counts', got {type(r).__name__}")
    sizes = {(int(r["size"][0]), int(r["size"][1])) for r in rles}
    if len(sizes) != 1:
        raise ValueError(f"decode_many needs RLEs of one size, got {sorted(sizes)}")
    ((h, w),) = sizes
    if h < 0 or w < 0 or h * w > MAX_PIXELS:
        raise ValueError(f"COCO RLE size {h}x{w} is negative or over the {MAX_PIXELS}-pixel image limit")
    check_mask_budget(len(rles), h, w, "decoded RLE masks")
    if not all(isinstance(r["counts"], (str, bytes)) for r in rles):
        return np.stack([decode(r) for r in rles])
    parts = [r["counts"].encode("ascii") if isinstance(r["counts"], str) else bytes(r["counts"]) for r in rles]
    char_splits = np.concatenate(([0], np.cumsum([len(p) for p in parts]))).astype(np.int64)
    counts, splits = _counts_of_strings(b"".join(parts), char_splits)
    if (counts < 0).any():
        raise ValueError("negative run length in COCO RLE")
    total = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    per = total[splits[1:]] - total[splits[:-1]]  # each RLE's sum; 0 for an empty one, wherever it stands
    if (per != h * w).any():
        bad = int(per[per != h * w][0])
        raise ValueError(f"COCO RLE counts sum to {bad}, expected H*W = {h}*{w} = {h * w}")
    owner = np.repeat(np.arange(len(rles)), np.diff(splits))
    values = ((np.arange(len(counts)) - splits[owner]) % 2).astype(np.uint8)
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape(len(rles), w, h).transpose(0, 2, 1))


def area(rle: Mapping[str, Any]) -> int:
    """Number of set pixels of a COCO RLE (sum of the odd runs)."""
    _, _, counts = _counts_array(rle)
    return int(counts[1::2].sum())


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
    """Rasterise COCO polygons (lists ``[x0, y0, x1, y1, ...]`` in pixel coordinates) into a uint8 mask, pixel for
    pixel as pycocotools does (``frPyObjects`` + ``merge``, what COCOeval and mmdet use): each polygon on its own,
    then their union.

    The rule (an independent numpy formulation of COCO's ``rleFrPoly``): the vertices are scaled by 5 and rounded,
    the outline is walked point by point along each edge's major axis, and every step of the walk to a new scaled
    column that falls on a pixel centre toggles that pixel column from the row the outline crosses (rounded up).
    Vertices with fewer than 3 points are skipped.
    """
    h, w = int(height), int(width)
    mask = np.zeros((h, w), dtype=np.uint8)
    for poly in polygons:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if xy.shape[0] < 3:
            continue
        if not np.isfinite(xy).all():
            raise ValueError("polygon coordinates must be finite")
        mask |= _polygon_mask(xy, h, w)
    return mask


def _polygon_mask(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    """One COCO polygon as a uint8 ``[H,W]`` mask (see :func:`polygons_to_mask`)."""
    scale = 5.0
    x = np.trunc(scale * xy[:, 0] + 0.5).astype(np.int64)  # C's (int) cast truncates towards zero
    y = np.trunc(scale * xy[:, 1] + 0.5).astype(np.int64)
    x, y = np.append(x, x[0]), np.append(y, y[0])
    us, vs = [], []
    for j in range(len(xy)):  # dense integer points along every edge, walked along its major axis
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx >= dy:
            t = np.arange(dx + 1)
            t = dx - t if flip else t
            slope = (ye - ys) / dx if dx else 0.0
            us.append(t + xs)
            vs.append(np.trunc(ys + slope * t + 0.5).astype(np.int64))
        else:
            t = np.arange(dy + 1)
            t = dy - t if flip else t
            slope = (xe - xs) / dy
            vs.append(t + ys)
            us.append(np.trunc(xs + slope * t + 0.5).astype(np.int64))
    u, v = np.concatenate(us), np.concatenate(vs)
    step = u[1:] != u[:-1]  # the outline moves to another scaled column: a crossing of that column
    u1, u0, v1, v0 = u[1:][step], u[:-1][step], v[1:][step], v[:-1][step]
    xd = (np.where(u1 < u0, u1, u1 - 1) + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)  # only columns through pixel centres
    yd = np.ceil(np.clip((np.minimum(v1, v0) + 0.5) / scale - 0.5, 0, h))
    toggles = np.sort(np.append(xd[keep].astype(np.int64) * h + yd[keep].astype(np.int64), h * w))
    # column-major toggles: each starts or ends a run of foreground; two at one place cancel
    flat = np.zeros(h * w + 1, dtype=np.int64)
    np.add.at(flat, toggles, 1)
    inside = (np.cumsum(flat[:-1] % 2) % 2).astype(np.uint8)
    return inside.reshape(w, h).T.copy()


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    """Any COCO ``segmentation`` value (polygon list, RLE dict with str or list counts) -> uint8 mask.

    Returns ``None`` only when the value is *absent* (``None``, ``[]``, ``{}``): a box-only annotation, for which
    callers fall back to the box (see the ignore-mask rule). A value that is present but corrupt (an undecodable
    RLE string, counts that do not fill the image, an RLE size other than the image's, malformed polygons, another
    type) raises ``ValueError``: corrupt data never passes silently as box-only."""
    if segmentation is None or (isinstance(segmentation, (list, tuple, dict)) and not segmentation):
        return None
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if isinstance(size, (list, tuple)) and len(size) == 2 and list(size) != [int(height), int(width)]:
            raise ValueError(f"corrupt COCO RLE: size {list(size)} differs from the image size {[height, width]}")
        try:
            return decode(segmentation)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"corrupt COCO RLE: {exc}") from None
    if isinstance(segmentation, (list, tuple)):
        try:
            return polygons_to_mask(segmentation, height, width)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"corrupt COCO polygon segmentation: {exc}") from None
    raise ValueError(f"unsupported COCO segmentation of type {type(segmentation).__name__}")
    return None
