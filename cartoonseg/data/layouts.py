"""The three placement methods of CartoonSegmentation's dataset synthesis, and the instance-count sampler.

Source: CS ``animeinsseg/data/syndataset.py`` L75-125, ``paste_methods.py``, ``sampler.py`` (arXiv
2312.01943, §3.2, Fig. 3):

* ``regular`` - **row composition** (:func:`layout_regular`): N ~ Poisson(3.5) on [2, 9]; a base height
  ``N(0.33, 0.2)`` truncated to (0.15, 0.75) x tgt, each character ``U(0.7, 1.2)`` x that; ``distort_only``
  then rotation +-40 deg (p 0.3); repeats with p 0.15; left-to-right boxes with random depth (wide ones
  behind), overlap rules of ``gen_fg_regbboxes``; pasted far to near;
* ``personbbox`` - **COCO person boxes** (:func:`layout_person_boxes`): a person-box group from
  :class:`~cartoonseg.data.coco_layouts.PersonBoxSampler`, one character per box; rotation +-20 deg (p 0.33),
  repeats with p 0.12; boxes and characters paired by **aspect-ratio rank**; scaled into the box (up to fit
  when smaller in both sides, else down by the mean of the two ratios, min side 20 px), ``distort_only``,
  centred on the box; shuffled, then large ones (max side > 0.55 tgt) first (behind);
* ``partition`` - **free-space partition** (:func:`layout_partition`): N ~ Poisson(2.5) on [1, 9]; the
  ``train`` foreground chain; if N > 6 each is shrunk to <= tgt/2.5; largest first, each into the free
  rectangle with the best ``min(wl/wf, 1.2) * min(hl/hf, 1.2)``, at a random position that may overhang the
  rectangle by 1/3 of its own size and the canvas by 1/10, shrunk (not below 0.8x, LANCZOS) when larger than
  the rectangle; the free rectangles are then split around it.

Each returns a list of :class:`Placement` in **paste order** (first = furthest back). Foregrounds are
``uint8 [h,w,4]`` RGBA; positions are the top-left corner in canvas pixels and may lie off the canvas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cv2
import numpy as np

from .augment import fg_transform_distort, fg_transform_train, resize_rgba, rotate_expand
from .coco_layouts import PersonBoxSampler

__all__ = [
    "Placement",
    "PoissonCount",
    "choose_foregrounds",
    "layout_regular",
    "layout_person_boxes",
    "layout_partition",
    "row_boxes",
    "LAYOUTS",
]

LAYOUTS = ("regular", "personbbox", "partition")

Loader = Callable[[int], np.ndarray]


@dataclasses.dataclass
class Placement:
    """One foreground to paste: its index in the foreground list, the transformed RGBA, top-left ``x, y``."""

    fg_index: int
    rgba: np.ndarray
    x: int
    y: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the pasted image in canvas pixels (may extend past the canvas)."""
        return self.x, self.y, self.x + self.rgba.shape[1], self.y + self.rgba.shape[0]


class PoissonCount:
    """The original ``PossionSampler``: ``table_size`` Poisson(``lam``) draws frozen at construction; a draw
    picks a random slot, and values outside ``[lo, hi]`` are replaced by a uniform integer in ``[lo, hi-1]``
    (``np.random.randint(lo, hi)``).

    With the paper's settings the means are about 2.87 (lam 2.5 on [1, 9]) and 4.06 (lam 3.5 on [2, 9]).
    """

    def __init__(self, lam: float, lo: int, hi: int, seed: int = 0, table_size: int = 1024):
        if not 0 < lo < hi:
            raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
        self.lam, self.lo, self.hi = float(lam), int(lo), int(hi)
        self.table = np.random.default_rng([seed, 7919, int(lam * 1000)]).poisson(lam, table_size)

    def sample(self, rng: np.random.Generator) -> int:
        v = int(self.table[int(rng.integers(len(self.table)))])
        if not self.lo <= v <= self.hi:
            v = int(rng.integers(self.lo, self.hi))
        return v

    def expected(self) -> float:
        """Mean of the frozen sampler (exact, from the table)."""
        t = self.table
        valid = (t >= self.lo) & (t <= self.hi)
        return float((t[valid].sum() + (~valid).sum() * (self.lo + self.hi - 1) / 2) / len(t))


def choose_foregrounds(rng: np.random.Generator, n: int, num_fg: int, repeat_prob: float) -> list[int]:
    """``n`` foreground indices; each after the first repeats the previous one with ``repeat_prob``
    (twins/clones), otherwise is a uniform draw."""
    if num_fg <= 0:
        raise ValueError("no foregrounds to choose from")
    out: list[int] = []
    for i in range(n):
        if i > 0 and rng.random() < repeat_prob:
            out.append(out[-1])
        else:
            out.append(int(rng.integers(num_fg)))
    return out


def _trunc_normal(rng: np.random.Generator, mean: float, std: float, lo: float, hi: float) -> float:
    for _ in range(1000):
        v = float(rng.normal(mean, std))
        if lo < v < hi:
            return v
    return float(np.clip(mean, lo, hi))


def _resize_to_height(rgba: np.ndarray, height: float, max_width: float) -> np.ndarray:
    h, w = rgba.shape[:2]
    s = height / h
    if w * s > max_width:
        s = max_width / w
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return resize_rgba(rgba, max(1, w * s), max(1, h * s), interp)


# ------------------------------------------------------------------------------------------------ regular
def row_boxes(rng: np.random.Generator, sizes: list[tuple[int, int]], tgt: int
              ) -> tuple[list[tuple[int, int]], list[int]]:
    """``gen_fg_regbboxes``: top-left positions for a left-to-right row, and the paste order.

    Args:
        sizes: ``(w, h)`` of each foreground.

    Returns:
        ``(positions [(x, y)], order)`` with order = indices sorted by depth, far (large depth) first.
    """
    n = len(sizes)
    depth = rng.random(n) + np.array([1.0 if w > 0.6 * tgt else 0.0 for w, _ in sizes])
    xs = np.zeros(n)
    ys = np.zeros(n)
    p = 0.0
    for i, (w, h) in enumerate(sizes):
        yc = (tgt - h) / 2
        jitter = min(abs(yc), h / 4) if yc > 0 else 0.0
        ys[i] = yc + (rng.uniform(-jitter, jitter) if jitter > 0 else 0.0)
        if i == 0:
            continue
        pw, ph = sizes[i - 1]
        x = xs[i - 1] + pw
        if depth[i] < depth[i - 1]:  # in front of the previous one
            lo = max(0.15 - p, 0.0) * pw
            hi = max(0.8 - p, 0.0) * pw
            x -= rng.uniform(lo, hi) if hi > lo else lo
            p = 0.0
        else:  # behind: slides under the previous one
            x -= rng.uniform(0.15, 0.8) * w
            ix = max(0.0, min(x + w, xs[i - 1] + pw) - max(x, xs[i - 1]))
            iy = max(0.0, min(ys[i] + h, ys[i - 1] + ph) - max(ys[i], ys[i - 1]))
            p = ix * iy / max(w * h, 1)
        xs[i] = x
    left = xs.min()
    right = max(xs[i] + sizes[i][0] for i in range(n))
    width = right - left
    shift = (rng.uniform(0, tgt - width) if width <= tgt else (tgt - width) / 2) - left
    positions = [(int(round(xs[i] + shift)), int(round(ys[i]))) for i in range(n)]
    order = [int(i) for i in np.argsort(-depth, kind="stable")]
    return positions, order


def layout_regular(rng: np.random.Generator, fg_ids: list[int], load: Loader, tgt: int, rotate: float = 40.0,
                   rotate_prob: float = 0.3) -> list[Placement]:
    """Row composition (see the module docstring)."""
    base = _trunc_normal(rng, 0.33, 0.2, 0.15, 0.75) * tgt
    fgs = []
    for idx in fg_ids:
        fg = _resize_to_height(load(idx), float(rng.uniform(0.7, 1.2)) * base, max_width=0.95 * tgt)
        fg = fg_transform_distort(fg, rng)
        if rng.random() < rotate_prob:
            fg = rotate_expand(fg, float(rng.uniform(-rotate, rotate)))
        fgs.append(fg)
    positions, order = row_boxes(rng, [(f.shape[1], f.shape[0]) for f in fgs], tgt)
    return [Placement(fg_ids[i], fgs[i], *positions[i]) for i in order]


# ---------------------------------------------------------------------------------------------- personbbox
def layout_person_boxes(rng: np.random.Generator, sampler: PersonBoxSampler, num_fg: int, load: Loader, tgt: int,
                        repeat_prob: float = 0.12, rotate: float = 20.0, rotate_prob: float = 0.33,
                        large: float = 0.55) -> list[Placement]:
    """COCO person-box layout (see the module docstring)."""
    boxes = sampler.sample(rng, tgt)
    fg_ids = choose_foregrounds(rng, len(boxes), num_fg, repeat_prob)
    fgs = []
    for idx in fg_ids:
        fg = load(idx)
        if rng.random() < rotate_prob:
            fg = rotate_expand(fg, float(rng.uniform(-rotate, rotate)))
        fgs.append(fg)
    box_wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    box_rank = np.argsort(box_wh[:, 0] / np.maximum(box_wh[:, 1], 1e-6), kind="stable")
    fg_rank = np.argsort([f.shape[1] / f.shape[0] for f in fgs], kind="stable")
    placements = []
    for bi, fi in zip(box_rank, fg_rank):
        fg = fgs[fi]
        bw, bh = box_wh[bi]
        fh, fw = fg.shape[:2]
        if fh < bh and fw < bw:
            s = min(bh / fh, bw / fw)
            fg = resize_rgba(fg, fw * s, fh * s, cv2.INTER_LINEAR)
        else:
            s = (min(1.0, bh / fh) + min(1.0, bw / fw)) / 2
            if s < 1:
                s = max(s, 20.0 / min(fh, fw)) if min(fh, fw) > 20 else 1.0
                fg = resize_rgba(fg, fw * s, fh * s, cv2.INTER_AREA)
        fg = fg_transform_distort(fg, rng)
        cx = (boxes[bi, 0] + boxes[bi, 2]) / 2
        cy = (boxes[bi, 1] + boxes[bi, 3]) / 2
        placements.append(Placement(fg_ids[fi], fg, int(round(cx - fg.shape[1] / 2)), int(round(cy - fg.shape[0] / 2))))
    perm = rng.permutation(len(placements))
    placements = [placements[i] for i in perm]
    placements.sort(key=lambda p: 0 if max(p.rgba.shape[:2]) > large * tgt else 1)  # stable: large ones behind
    return placements


# ----------------------------------------------------------------------------------------------- partition
def _split_rect(rect, cut, min_side: float) -> list[tuple[float, float, float, float]]:
    x0, y0, x1, y1 = rect
    cx0, cy0, cx1, cy1 = cut
    if cx0 >= x1 or cx1 <= x0 or cy0 >= y1 or cy1 <= y0:
        return [rect]
    ix0, ix1 = max(x0, cx0), min(x1, cx1)
    pieces = [(x0, y0, cx0, y1), (cx1, y0, x1, y1), (ix0, y0, ix1, cy0), (ix0, cy1, ix1, y1)]
    return [r for r in pieces if r[2] - r[0] >= min_side and r[3] - r[1] >= min_side]


def layout_partition(rng: np.random.Generator, fg_ids: list[int], load: Loader, tgt: int,
                     min_leaf: float = 0.04) -> list[Placement]:
    """Free-space partition packing (see the module docstring)."""
    fgs = [fg_transform_train(load(idx), rng, tgt) for idx in fg_ids]
    if len(fgs) > 6:
        lim = tgt / 2.5
        fgs = [resize_rgba(f, f.shape[1] * s, f.shape[0] * s, cv2.INTER_AREA)
               if (s := min(1.0, lim / f.shape[1], lim / f.shape[0])) < 1 else f for f in fgs]
    order = sorted(range(len(fgs)), key=lambda i: -fgs[i].shape[0] * fgs[i].shape[1])
    leaves: list[tuple[float, float, float, float]] = [(0.0, 0.0, float(tgt), float(tgt))]
    placements = []
    for i in order:
        fg = fgs[i]
        h, w = fg.shape[:2]
        if leaves:
            scores = [min((r[2] - r[0]) / w, 1.2) * min((r[3] - r[1]) / h, 1.2) for r in leaves]
            leaf = leaves[int(np.argmax(scores))]
            lw, lh = leaf[2] - leaf[0], leaf[3] - leaf[1]
            if w > lw or h > lh:
                s = max(0.8, min(lw / w, lh / h))
                if s < 1:
                    fg = resize_rgba(fg, w * s, h * s, cv2.INTER_LANCZOS4)
                    h, w = fg.shape[:2]
            xr = (max(leaf[0] - w / 3, -w / 10), min(leaf[2] - w + w / 3, tgt - w + w / 10))
            yr = (max(leaf[1] - h / 3, -h / 10), min(leaf[3] - h + h / 3, tgt - h + h / 10))
        else:
            xr = (-w / 10, tgt - w + w / 10)
            yr = (-h / 10, tgt - h + h / 10)
        x = rng.uniform(*xr) if xr[1] > xr[0] else (xr[0] + xr[1]) / 2
        y = rng.uniform(*yr) if yr[1] > yr[0] else (yr[0] + yr[1]) / 2
        x, y = int(round(x)), int(round(y))
        cut = (max(0, x), max(0, y), min(tgt, x + w), min(tgt, y + h))
        new_leaves = []
        for r in leaves:
            new_leaves.extend(_split_rect(r, cut, min_leaf * tgt))
        leaves = new_leaves
        placements.append(Placement(fg_ids[i], fg, x, y))
    return placements
