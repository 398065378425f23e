"""Completion of regular patterns along their lattice of repetition (cartoonseg.inpaint.lattice), on drawn patterns
whose periods are known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from cartoonseg.inpaint import patchmatch_inpaint
from cartoonseg.inpaint.lattice import Lattice, find_lattice, lattice_fill

H, W = 96, 128
INK = torch.tensor([0.12, 0.1, 0.12])
A = torch.tensor([0.85, 0.45, 0.35])
B = torch.tensor([0.95, 0.85, 0.55])


def _grid():
    return torch.meshgrid(torch.arange(H, dtype=torch.float32) + 0.5, torch.arange(W, dtype=torch.float32) + 0.5,
                          indexing="ij")


def _mix(mask, a, b):
    return torch.where(mask[..., None], a, b)


def checker(tile=9.5):
    """Tiles of two colours with ink grout (periods (2 tile, 0), (0, 2 tile), (tile, tile))."""
    y, x = _grid()
    check = (torch.floor(y / tile) + torch.floor(x / tile)) % 2 == 0
    grout = ((y / tile - torch.round(y / tile)).abs() * tile < 0.75) | ((x / tile - torch.round(x / tile)).abs()
                                                                         * tile < 0.75)
    return _mix(grout, INK, _mix(check, A, B)), [(2 * tile, 0.0), (0.0, 2 * tile), (tile, tile)]


def stripes(period=13.0, theta=0.6):
    """Slanted stripes: repeat along the stripes (any distance) and by one period across them."""
    y, x = _grid()
    t = (x * math.cos(theta) + y * math.sin(theta)) / period
    out = _mix(torch.floor(t) % 2 == 0, A, B)
    along = (-10.0 * math.cos(theta), 10.0 * math.sin(theta))  # (dy, dx) along the stripes
    return out, [along, (2 * period * math.sin(theta), 2 * period * math.cos(theta))]


def planks(width=11.0):
    """Vertical planks, each its own shade (a pseudo-random one per plank), ink seams: repeat only along the planks."""
    y, x = _grid()
    col = torch.floor(x / width)
    shade = 0.75 + 0.25 * torch.frac(torch.sin(col * 12.9898) * 43758.5453).abs()
    out = A[None, None] * shade[..., None]
    seam = (x / width - torch.round(x / width)).abs() * width < 0.75
    return _mix(seam, INK, out), [(17.0, 0.0)]


def _is_period(image, t, known=None):
    """Mean squared difference between the pattern and the pattern moved by ``t`` (bilinear), over the pixels
    whose translate lies inside."""
    from cartoonseg.inpaint.lattice import _translates

    known = torch.ones(H, W, dtype=torch.bool) if known is None else known
    pos = known.nonzero().double()
    col, found = _translates(image, torch.ones(H, W, dtype=torch.bool), pos,
                             Lattice(t1=t, t2=None, score1=1.0, score2=None), 1)
    sel = pos[found].long()
    return float(((col[found] - image[sel[:, 0], sel[:, 1]]) ** 2).mean())


def _ellipse(cy, cx, ry, rx):
    y, x = _grid()
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1.0


def _psnr(a, b, m):
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean(-1)[m].mean()))


@pytest.mark.parametrize("pattern", [checker, stripes, planks])
def test_find_lattice_finds_translations_that_repeat_the_pattern(pattern):
    """Each translation found repeats the pattern, where the known part is all but a wide hole: the mean squared
    difference between the pattern and its translate is below a quarter of the pattern's own spread (about 0.03;
    what remains is the bilinear resampling of sharp edges at a sub-pixel translation, and the planks' shades, which
    differ from plank to plank while their seams repeat)."""
    image, _ = pattern()
    hole = _ellipse(48, 64, 26, 20)
    lattice = find_lattice(image, ~hole)
    assert lattice is not None
    spread = float(((image - image.mean((0, 1))) ** 2).mean())
    for t in [lattice.t1] + ([lattice.t2] if lattice.t2 is not None else []):
        assert math.hypot(*t) >= 3.0
        assert _is_period(image, t) < 0.25 * spread, (t, _is_period(image, t), spread)


def test_find_lattice_of_a_checkerboard_is_made_of_its_periods():
    """The two translations found are periods of the checkerboard: integer combinations of (tile, tile) and
    (tile, -tile) (to a tenth of a pixel: the sub-pixel fit of the correlation peaks at the periods' multiples), and
    not parallel."""
    tile = 9.5
    image, _ = checker(tile=tile)
    lattice = find_lattice(image, ~_ellipse(48, 64, 20, 16))
    assert lattice is not None and lattice.t2 is not None
    basis = torch.tensor([[tile, tile], [tile, -tile]], dtype=torch.float64).t()
    for t in (lattice.t1, lattice.t2):
        n = torch.linalg.solve(basis, torch.tensor(t, dtype=torch.float64))
        assert float((n - torch.round(n)).abs().max()) < 0.1 / tile, (t, n)
    (a, b), (c, d) = lattice.t1, lattice.t2
    assert abs(a * d - b * c) > 0.3 * math.hypot(a, b) * math.hypot(c, d)


def _noise(seed):
    g = torch.Generator().manual_seed(seed)
    n = torch.rand(1, 3, H // 8, W // 8, generator=g)
    return torch.nn.functional.interpolate(n, size=(H, W), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)


def _sky():
    y, x = _grid()
    out = torch.tensor([0.45, 0.65, 0.95]) * (1 - y[..., None] / H) + torch.tensor([0.75, 0.88, 1.0]) * (
        y[..., None] / H)
    for cy, cx, r in ((20, 30, 9), (26, 80, 12), (60, 110, 7)):
        out = _mix((y - cy) ** 2 + (x - cx) ** 2 < r * r, torch.tensor([0.98, 0.98, 1.0]), out)
    return out


@pytest.mark.parametrize("image", [_noise(0), _noise(1), _sky(), A.expand(H, W, 3).clone(),
                                   _mix(_ellipse(48, 64, 20, 30), INK, A)],
                         ids=["noise0", "noise1", "sky", "flat", "disc"])
def test_find_lattice_refuses_content_that_does_not_repeat(image):
    """Smooth content (a sky's gradient, smooth noise) matches itself moved by a few pixels, but not twice and three
    times as far: no lattice. Nor for a flat colour or a lone shape."""
    assert find_lattice(image, ~_ellipse(48, 64, 10, 10)) is None


def test_find_lattice_needs_enough_known_pixels():
    image, _ = checker()
    known = _ellipse(48, 64, 4, 4)
    assert find_lattice(image, known) is None


@pytest.mark.parametrize("pattern", [checker, stripes, planks])
def test_lattice_fill_continues_a_wide_hole_where_patchmatch_loses_the_edges(pattern):
    """A hole wider than the pattern's tiles: every pixel is copied from a known translate, so every edge goes on
    across it (above 20 dB: only the resampled edges differ); PatchMatch, whose patches inside a flat tile all look
    alike, loses them (at least 5 dB lower on every pattern)."""
    image, _ = pattern()
    hole = _ellipse(48, 64, 26, 20)
    lattice = find_lattice(image, ~hole)
    out, filled = lattice_fill(image, hole, ~hole, lattice)
    assert bool(filled[hole].all()) and not bool(filled[~hole].any())
    assert torch.equal(out[~hole], image[~hole])
    ours = _psnr(out, image, hole)
    theirs = _psnr(patchmatch_inpaint(image, hole, patch_size=5), image, hole)
    assert ours > 20.0 and ours > theirs + 5.0, (ours, theirs)


def test_lattice_fill_leaves_pixels_without_a_known_translate():
    """Only what the known region repeats is filled: pixels farther than the searched steps from any known
    translate stay as they were (the caller fills them otherwise)."""
    image, _ = checker(tile=6.0)
    known = torch.zeros(H, W, dtype=torch.bool)
    known[:30, :40] = True
    lattice = find_lattice(image, known)
    assert lattice is not None
    hole = ~known
    out, filled = lattice_fill(image, hole, known, lattice, max_steps=2)
    assert bool(filled.any()) and not bool(filled[known].any())
    far = torch.zeros_like(hole)
    far[80:, 100:] = True  # more than 2 steps of 12 px from the known corner
    assert not bool(filled[far].any()) and torch.equal(out[far], image[far])
    assert float((out[filled] - image[filled]).abs().max()) < 0.6  # what is filled is the pattern's


def test_lattice_offsets_are_nearest_first_and_nonzero():
    lattice = Lattice(t1=(0.0, 5.0), t2=(4.0, 0.0), score1=1.0, score2=1.0)
    offs = lattice.offsets(2)
    norms = offs.norm(dim=1)
    assert bool((norms > 0).all()) and bool((norms[1:] >= norms[:-1]).all())
    assert offs.shape == (24, 2)
    assert Lattice(t1=(0.0, 5.0), t2=None, score1=1.0, score2=None).offsets(3).shape == (6, 2)


def test_lattice_functions_refuse_mismatched_shapes():
    image, _ = checker()
    with pytest.raises(ValueError, match="image \\[H,W,C\\]"):
        find_lattice(image[..., 0], torch.ones(H, W, dtype=torch.bool))
    with pytest.raises(ValueError, match="known \\[H,W\\]"):
        find_lattice(image, torch.ones(H, W + 1, dtype=torch.bool))
    lattice = Lattice(t1=(0.0, 19.0), t2=None, score1=1.0, score2=None)
    with pytest.raises(ValueError, match="hole, known"):
        lattice_fill(image, torch.ones(H, W + 1, dtype=torch.bool), torch.ones(H, W, dtype=torch.bool), lattice)
