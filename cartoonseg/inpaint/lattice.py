"""Completion of regular patterns by their lattice of repetition (translational symmetry).

Floors, walls and fences in cartoons are drawn with regular patterns: tiles, planks, bricks, stripes, dots. Seen
without perspective (a fronto-parallel wall, or a slanted plane rectified: :mod:`cartoonseg.kenburns.planes`) such a
pattern repeats by a lattice of translations ``n1 * t1 + n2 * t2``. What a hole hides is then what the pattern shows
one or a few periods away: copying it from there continues every line and tile edge exactly, where PatchMatch, whose
patches inside a flat tile all look alike, loses the tiles' edges across a wide hole. This is the regularity step of
Huang et al. 2014 ("Image Completion using Planar Structure Guidance", §4: the dominant translations of the known
region guide the completion), here as a direct copy along the lattice where the pattern's repetition is strong.

:func:`find_lattice` measures the known region's normalised autocorrelation (masked, by FFT) and keeps the shortest
translations whose correlation is high (:data:`MIN_CORRELATION`); :func:`lattice_fill` gives each hole pixel the
colour of the nearest lattice translate of it that is known. A pattern without strong repetition (clouds, a tree,
a drawn house) has no lattice and is left to the caller's fill.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Lattice", "MIN_CORRELATION", "find_lattice", "lattice_fill"]

#: A translation is a period of the pattern when the known region's normalised autocorrelation at it is at least this
#: (1 = the pattern equals itself moved by it; a brick wall whose bricks vary in shade scores about 0.8-0.9, a
#: checkerboard or stripes 0.95-1, clouds, trees and houses well below 0.5).
MIN_CORRELATION = 0.75
#: Translations shorter than this (pixels) are not periods: the autocorrelation's central lobe.
MIN_PERIOD = 3.0
#: Pixel pairs an offset must compare (fraction of the known pixels) for its correlation to count.
MIN_OVERLAP = 0.25
#: Lattice steps searched for a known translate of a hole pixel (``|n1|, |n2|`` up to this).
MAX_STEPS = 6


@dataclasses.dataclass(frozen=True)
class Lattice:
    """The translations a pattern repeats by, in pixels ``(dy, dx)``: ``t1`` the strongest short one, ``t2`` the
    strongest one not parallel to it (None for a pattern that repeats in one direction only: stripes, planks),
    with their normalised autocorrelations."""

    t1: tuple[float, float]
    t2: tuple[float, float] | None
    score1: float
    score2: float | None

    def offsets(self, max_steps: int = MAX_STEPS) -> Tensor:
        """``[K,2]`` translations ``n1 t1 + n2 t2`` (``(dy, dx)``, pixels), nonzero, nearest first."""
        n = torch.arange(-max_steps, max_steps + 1, dtype=torch.float64)
        t1 = torch.tensor(self.t1, dtype=torch.float64)
        if self.t2 is None:
            offs = n[:, None] * t1[None]
        else:
            t2 = torch.tensor(self.t2, dtype=torch.float64)
            offs = (n[:, None, None] * t1 + n[None, :, None] * t2).reshape(-1, 2)
        norm = offs.norm(dim=1)
        offs = offs[norm > 1e-6]
        return offs[torch.argsort(offs.norm(dim=1), stable=True)]


def _correlate(a: Tensor, b: Tensor, shape: tuple[int, int]) -> Tensor:
    """``c[d] = sum_x a[x] b[x + d]`` over the padded FFT grid ``shape`` (offsets wrap; the padding prevents
    aliasing), ``a`` and ``b`` ``[C,H,W]`` summed over ``C``."""
    fa = torch.fft.rfft2(a, s=shape)
    fb = torch.fft.rfft2(b, s=shape)
    return torch.fft.irfft2(fa.conj() * fb, s=shape).sum(0)


def _subpixel(c: Tensor, y: int, x: int) -> tuple[float, float]:
    """Parabolic refinement of the peak of ``c`` at ``(y, x)`` (wrapped indices)."""
    h, w = c.shape

    def vertex(m: float, z: float, p: float) -> float:
        den = m - 2 * z + p
        return 0.0 if den >= 0 else max(-0.5, min(0.5, 0.5 * (m - p) / den))

    dy = vertex(float(c[(y - 1) % h, x]), float(c[y, x]), float(c[(y + 1) % h, x]))
    dx = vertex(float(c[y, (x - 1) % w]), float(c[y, x]), float(c[y, (x + 1) % w]))
    return dy, dx


def _refine(corr: Tensor, valid: Tensor, ty: float, tx: float, multiples: int = 4) -> tuple[float, float]:
    """A period ``(ty, tx)`` (an integer peak of ``corr``) to sub-pixel precision: the peaks at its multiples
    ``n t`` (the best offset within a pixel of each, refined by a parabola) fitted by least squares, ``t = sum(n p_n)
    / sum(n^2)``; the error of one peak's position is divided by the largest multiple seen."""
    gh, gw = corr.shape
    num_y = num_x = den = 0.0
    for n in range(1, multiples + 1):
        cy, cx = round(n * ty), round(n * tx)
        best = None
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                y, x = (cy + oy) % gh, (cx + ox) % gw
                if bool(valid[y, x]) and (best is None or float(corr[y, x]) > best[0]):
                    best = (float(corr[y, x]), cy + oy, cx + ox)
        if best is None:
            break
        sy, sx = _subpixel(corr, best[1] % gh, best[2] % gw)
        num_y += n * (best[1] + sy)
        num_x += n * (best[2] + sx)
        den += n * n
    return num_y / den, num_x / den


def find_lattice(image: Tensor, known: Tensor, *, min_correlation: float = MIN_CORRELATION,
                 min_period: float = MIN_PERIOD) -> Lattice | None:
    """The lattice of translations the known part of a regular pattern repeats by, or None.

    Args:
        image: ``[H,W,C]`` float colours.
        known: ``[H,W]`` bool, the pixels that show the pattern (the others are ignored).
        min_correlation: least normalised autocorrelation of a period (:data:`MIN_CORRELATION`).
        min_period: shortest period in pixels (:data:`MIN_PERIOD`).

    Returns:
        a :class:`Lattice` (translations in pixels, ``(dy, dx)``), or None where no translation repeats the pattern
        that well (or too little is known to tell).
    """
    if image.dim() != 3 or known.shape != image.shape[:2]:
        raise ValueError(f"find_lattice needs image [H,W,C] and known [H,W]; got {tuple(image.shape)}, "
                         f"{tuple(known.shape)}")
    h, w, _ = image.shape
    m = known.to(torch.float64)
    count = float(m.sum())
    if count < 16 * min_period * min_period:
        return None
    img = image.to(torch.float64).permute(2, 0, 1)
    mean = (img * m).sum((1, 2), keepdim=True) / count
    x = (img - mean) * m
    if float((x * x).sum()) <= 1e-12 * count:
        return None  # a flat colour: nothing to repeat
    shape = (2 * h, 2 * w)
    num = _correlate(x, x, shape)
    e_a = _correlate(x * x, m[None].expand_as(x), shape)  # energy of the pixels x whose partner x + d is known
    e_b = _correlate(m[None].expand_as(x), x * x, shape)  # energy of the partners
    overlap = _correlate(m[None], m[None], shape)
    corr = num / (e_a * e_b).clamp_min(1e-12).sqrt()
    # offsets (dy, dx) of the wrapped grid
    dy = torch.arange(shape[0], dtype=torch.float64)
    dy = torch.where(dy >= shape[0] // 2, dy - shape[0], dy)
    dx = torch.arange(shape[1], dtype=torch.float64)
    dx = torch.where(dx >= shape[1] // 2, dx - shape[1], dx)
    length = (dy[:, None] ** 2 + dx[None, :] ** 2).sqrt()
    valid = (overlap >= MIN_OVERLAP * count) & (length >= min_period) & (e_a > 1e-9) & (e_b > 1e-9)
    corr = torch.where(valid, corr, torch.full_like(corr, -2.0))
    # peaks: local maxima (3x3, wrapped) of the correlation
    padded = torch.cat([corr[-1:], corr, corr[:1]], 0)
    padded = torch.cat([padded[:, -1:], padded, padded[:, :1]], 1)
    local = F.max_pool2d(padded[None, None], 3, 1)[0, 0]
    peak = valid & (corr >= local) & (corr >= min_correlation)
    # a period repeats: the pattern also matches itself moved by twice and three times it (smooth content, a sky's
    # gradient, matches itself moved by a few pixels but less and less the farther it moves)
    gh, gw = shape
    for n in (2, 3):
        iy = torch.round(dy * n).long() % gh
        ix = torch.round(dx * n).long() % gw
        near = local[iy[:, None], ix[None, :]]  # best correlation within a pixel of n * d
        seen = valid[iy[:, None], ix[None, :]]
        # twice the period must be seen and match; three times where the known region is large enough to tell
        peak &= (near >= min_correlation) & seen if n == 2 else (near >= min_correlation) | ~seen
    if not bool(peak.any()):
        return None
    ys, xs = peak.nonzero(as_tuple=True)
    scores = corr[ys, xs]
    lens = length[ys, xs]
    # the shortest of the near-best translations (a pattern also repeats by every multiple of its period)
    best = float(scores.max())
    good = scores >= best - 0.5 * (1.0 - min_correlation)
    order = torch.argsort(torch.where(good, lens, torch.full_like(lens, float("inf"))), stable=True)
    i1 = int(order[0])
    t1 = _refine(corr, valid, float(dy[ys[i1]]), float(dx[xs[i1]]))
    # a second translation, not parallel to the first (at least 20 degrees apart)
    v1 = torch.tensor(t1, dtype=torch.float64)
    vy, vx = dy[ys], dx[xs]
    cross = (v1[0] * vx - v1[1] * vy).abs()
    apart = cross >= math.sin(math.radians(20.0)) * v1.norm() * lens
    if not bool(apart.any()):
        return Lattice(t1=t1, t2=None, score1=float(scores[i1]), score2=None)
    best2 = float(scores[apart].max())
    good2 = apart & (scores >= best2 - 0.5 * (1.0 - min_correlation))
    i2 = int(torch.argsort(torch.where(good2, lens, torch.full_like(lens, float("inf"))), stable=True)[0])
    t2 = _refine(corr, valid, float(dy[ys[i2]]), float(dx[xs[i2]]))
    return Lattice(t1=t1, t2=t2, score1=float(scores[i1]), score2=float(scores[i2]))


def _translates(image: Tensor, known: Tensor, pos: Tensor, lattice: Lattice, max_steps: int) -> tuple[Tensor, Tensor]:
    """Colours ``[M,C]`` at the nearest lattice translate of each position ``pos`` ``[M,2]`` (y, x) whose four
    neighbouring pixels are all ``known``, and ``[M]`` bool which have one within ``max_steps`` steps."""
    h, w, c = image.shape
    src = image.permute(2, 0, 1)[None].float()
    ok_map = known.float()[None, None]
    todo = torch.ones(pos.shape[0], dtype=torch.bool)
    colours = torch.zeros(pos.shape[0], c, dtype=image.dtype)
    for off in lattice.offsets(max_steps):
        idx = todo.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        q = pos[idx] + off
        inside = (q[:, 0] >= 0) & (q[:, 0] <= h - 1) & (q[:, 1] >= 0) & (q[:, 1] <= w - 1)
        if not bool(inside.any()):
            continue
        idx, q = idx[inside], q[inside]
        grid = torch.stack([q[:, 1] / max(1, w - 1) * 2 - 1, q[:, 0] / max(1, h - 1) * 2 - 1], -1).float()
        grid = grid[None, None]
        ok = F.grid_sample(ok_map, grid, mode="bilinear", align_corners=True)[0, 0, 0] > 0.999
        if not bool(ok.any()):
            continue
        val = F.grid_sample(src, grid[:, :, ok], mode="bilinear", align_corners=True)[0, :, 0].t()
        colours[idx[ok]] = val.to(colours)
        todo[idx[ok]] = False
    return colours, ~todo


def lattice_fill(image: Tensor, hole: Tensor, known: Tensor, lattice: Lattice, *,
                 max_steps: int = MAX_STEPS) -> tuple[Tensor, Tensor]:
    """Fill the ``hole`` pixels of ``image`` from their nearest lattice translate that is ``known``.

    Each hole pixel ``x`` takes the colour at ``x + n1 t1 + n2 t2`` (bilinear) for the shortest such translation
    whose four neighbouring pixels are all known; pixels with none within ``max_steps`` steps are left.

    Args:
        image: ``[H,W,C]`` float colours.
        hole: ``[H,W]`` bool, the pixels to fill.
        known: ``[H,W]`` bool, the pixels that may be copied (the pattern's).
        lattice: from :func:`find_lattice`.
        max_steps: largest ``|n1|``, ``|n2|`` tried.

    Returns:
        ``(image, filled)``: the colours with the filled pixels set, and ``[H,W]`` bool which were.
    """
    if hole.shape != image.shape[:2] or known.shape != image.shape[:2]:
        raise ValueError(f"lattice_fill needs image [H,W,C] and hole, known [H,W]; got {tuple(image.shape)}, "
                         f"{tuple(hole.shape)}, {tuple(known.shape)}")
    out = image.clone()
    filled = torch.zeros_like(hole)
    pos = hole.nonzero().to(torch.float64)  # [M,2] (y, x)
    if pos.numel() == 0:
        return out, filled
    colours, done = _translates(image, known, pos, lattice, max_steps)
    sel = pos[done].long()
    out[sel[:, 0], sel[:, 1]] = colours[done]
    filled[sel[:, 0], sel[:, 1]] = True
    return out, filled
