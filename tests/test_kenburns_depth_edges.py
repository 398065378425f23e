"""Depth-edge refinement of the Ken Burns renderer (cartoonseg.kenburns.depth_edges) on drawn scenes whose exact
depth is known: a near disc in front of a patterned far wall, its depth blurred into a ramp as a depth estimator
gives it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import cartoonseg.kenburns.depth_edges as depth_edges
from cartoonseg.kenburns import KenBurnsConfig, build_scene
from cartoonseg.kenburns.depth_edges import refine_depth_edges

H, W = 48, 64
NEAR, FAR = 1.0, 0.4  # nearness of the disc and of the wall: a clear depth step
CENTRE, RADIUS = (23.3, 30.6), 12.7  # off the pixel grid, so the edge runs at every angle and sub-pixel offset


def _blur(near: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Gaussian blur (the estimator's ramp), replicate-padded."""
    r = math.ceil(3 * sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    v = F.pad(near[None, None], (r, r, r, r), mode="replicate")
    v = F.conv2d(v, g.view(1, 1, 1, -1))
    return F.conv2d(v, g.view(1, 1, -1, 1))[0, 0]


def _disc_scene():
    """Image ``[3,H,W]``, exact nearness ``[H,W]`` and the signed distance (px) of each pixel centre to the disc's
    edge (negative inside). The wall is a two-colour checker (a patterned side), the disc plain blue."""
    y = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    x = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    dist = torch.hypot(y - CENTRE[0], x - CENTRE[1]) - RADIUS
    inside = dist < 0
    checker = ((y // 6 + x // 6) % 2).bool()
    wall = torch.where(checker[None], torch.tensor([0.9, 0.6, 0.7])[:, None, None],
                       torch.tensor([0.85, 0.45, 0.3])[:, None, None])
    rgb = torch.where(inside[None], torch.tensor([0.2, 0.4, 0.8])[:, None, None], wall)
    near = torch.where(inside, torch.tensor(NEAR), torch.tensor(FAR))
    return rgb, near, dist


def test_ramp_snapped_back_to_the_step_at_the_image_edge():
    rgb, near, dist = _disc_scene()
    ramp = _blur(near)
    out = refine_depth_edges(ramp, rgb)
    step = NEAR - FAR
    # every pixel more than a pixel from the edge is back on its own side: within 10 % of the step (the side's value
    # is the mean of its band, the top or bottom quarter of the range: at most 12.5 % off, a few percent here); the
    # blurred input is not (27 % of the step a pixel from the edge)
    off = dist.abs() > 1.0
    assert float((out - near).abs()[off].max()) < 0.1 * step
    assert float((ramp - near).abs()[off].max()) > 0.2 * step
    # the step is where the image's edge is: the near side's pixels are exactly those inside the disc (within a pixel)
    snapped_near = out > 0.5 * (NEAR + FAR)
    wrong = snapped_near != (dist < 0)
    assert bool((dist.abs()[wrong] <= 1.0).all())
    # no value leaves the input's range, and the input is not changed in place
    assert float(out.min()) >= float(ramp.min()) and float(out.max()) <= float(ramp.max())
    assert torch.equal(ramp, _blur(near))


@pytest.mark.parametrize("gap", [3.0, 4.0])
def test_ramps_into_a_narrow_gap_snapped(gap):
    """A post stands ``gap`` px right of the disc (a character beside a tree, as in scene 1 of the quality benchmark):
    blurred as an estimator's, the gap of far wall between them becomes a valley, and a window's half-width along a
    ramp's slope lies the other object's ramp, as steep as its own. Comparing with the slope there took the disc's and
    the post's ramps for a slant, and 53-68 pixels stayed more than a quarter of the step off (the skin bridging the
    gap in a moved view; zoom-in of that scene 13.74 -> 12.60 dB); a ramp is steeper than the flattest point on each
    side (the valley's floor), and they are snapped."""
    rgb, near, dist = _disc_scene()
    y = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    x = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    left = CENTRE[1] + RADIUS + gap
    post = (x >= left) & (x < left + 6) & (y > 14) & (y < 32)
    near = torch.where(post, torch.tensor(0.9), near)
    rgb = torch.where(post[None], torch.tensor([0.3, 0.7, 0.2])[:, None, None], rgb)
    blurred = _blur(near)
    out = refine_depth_edges(blurred, rgb)

    def skin(v):
        return int(((v - near).abs() > 0.25 * (NEAR - FAR)).sum())

    assert skin(blurred) > 200
    assert skin(out) <= 0.1 * skin(blurred), (skin(out), skin(blurred))  # 0-9 left: the 3 px gap's middle column


def test_slant_and_flat_region_unchanged():
    rgb, _, _ = _disc_scene()  # the image's own edges must not move anything where the depth has none
    y = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    x = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    ground = 0.05 + 0.02 * y + 0.003 * x  # a plane: affine in disparity, 20x nearer at the bottom than at the top
    assert torch.equal(refine_depth_edges(ground, rgb), ground)
    flat = torch.full((H, W), 0.3)
    assert torch.equal(refine_depth_edges(flat, rgb), flat)
    # a slant with an estimator's smooth 3 % noise is no depth step either
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        noise = _blur(torch.randn(H + 24, W + 24, generator=g), 3.0)[12:-12, 12:-12]  # no padded border in it
        noisy = ground * torch.exp(0.03 * noise / noise.std())
        assert torch.equal(refine_depth_edges(noisy, rgb), noisy)


def test_deterministic_and_chunk_independent(monkeypatch):
    rgb, near, _ = _disc_scene()
    ramp = _blur(near)
    first = refine_depth_edges(ramp, rgb)
    assert torch.equal(refine_depth_edges(ramp, rgb), first)
    monkeypatch.setattr(depth_edges, "_CHUNK", 7)  # the flagged pixels gathered a few at a time
    assert torch.equal(refine_depth_edges(ramp, rgb), first)


def test_same_colour_sides_split_by_value():
    rgb, near, dist = _disc_scene()
    grey = torch.full_like(rgb, 0.5)  # no colour edge: the value decides (the ramp's midpoint)
    out = refine_depth_edges(_blur(near), grey)
    off = dist.abs() > 1.0
    assert float((out - near).abs()[off].max()) < 0.1 * (NEAR - FAR)


@pytest.mark.parametrize("kwargs", [dict(radius=0), dict(radius=33), dict(jump=0.0), dict(nonplanar=1.0)])
def test_bad_settings_refused(kwargs):
    rgb, near, _ = _disc_scene()
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        refine_depth_edges(near, rgb, **kwargs)


def test_bad_shapes_refused():
    rgb, near, _ = _disc_scene()
    with pytest.raises(ValueError, match=r"near must be \[H,W\] and rgb \[3,H,W\]"):
        refine_depth_edges(near, rgb[:, :-1])


def test_build_scene_refines_by_default_not_when_turned_off():
    rgb, near, dist = _disc_scene()
    ramp = _blur(near)
    image = rgb.permute(1, 2, 0)
    plain = build_scene(image, ramp, config=KenBurnsConfig(depth_refine=False))
    refined = build_scene(image, ramp)
    assert KenBurnsConfig().depth_refine is True
    off = dist.abs() > 1.0
    # scene depth is 1 / nearness (normalised to the nearest point): back to the two depths with the option only
    exact = 1.0 / (near / NEAR)
    assert float(((refined.depth - exact).abs() / exact)[off].max()) < 0.1
    assert float(((plain.depth - exact).abs() / exact)[off].max()) > 0.2


def _coverage(s: int = 4) -> torch.Tensor:
    """The disc's anti-aliased coverage of each pixel (``s`` x ``s`` samples), as a renderer's exact depth has it."""
    o = (torch.arange(s, dtype=torch.float32) + 0.5) / s - 0.5
    y = (torch.arange(H, dtype=torch.float32)[:, None] + o[None, :]).reshape(-1)
    x = (torch.arange(W, dtype=torch.float32)[:, None] + o[None, :]).reshape(-1)
    inside = (torch.hypot(y[:, None] - CENTRE[0], x[None, :] - CENTRE[1]) < RADIUS).float()
    return F.avg_pool2d(inside[None, None], s)[0, 0]


@pytest.mark.parametrize("slope", [0.0, 0.004, 0.008])
def test_sharp_step_beside_a_slant_unchanged(slope):
    """An exact depth's step is already sharp (not a ramp): left bit for bit, also where the far side is a slanted
    ground, which snapping to a side's mean value would flatten. With an anti-aliased rim (mixed pixels, one wide;
    where the rim runs diagonally and the ground's slant falls between the sides too, a window can hold 1.5 columns'
    worth), at most a few pixels move (1 % of the image), by under 5 % of their depth (the ground moves 2-8 % within
    a window here)."""
    rgb, _, _ = _disc_scene()
    far = 0.3 + slope * torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    cov = _coverage()
    binary = torch.where(cov > 0.5, torch.tensor(NEAR), far)
    assert torch.equal(refine_depth_edges(binary, rgb), binary)
    mixed = cov * NEAR + (1 - cov) * far
    out = refine_depth_edges(mixed, rgb)
    moved = out != mixed
    assert int(moved.sum()) <= 0.01 * H * W
    assert float(((out - mixed).abs() / mixed).max()) < 0.05


def test_sharp_depth_left_whole():
    """A depth whose steps are all sharp (exact, drawn) is not refined anywhere: also not where a ground meets a far
    wall (a crease: the ground's slant alone spans a window, which looks like a ramp there) or beside the disc."""
    rgb, _, dist = _disc_scene()
    y = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    ground = torch.where(y < 16, torch.tensor(0.2), 0.2 + 0.025 * (y - 16))
    near = torch.where(dist < 0, torch.tensor(NEAR), ground)
    assert torch.equal(refine_depth_edges(near, rgb), near)
    # the same scene blurred as an estimator's is refined: the disc's step comes back
    out = refine_depth_edges(_blur(near), rgb)
    assert float((out - near).abs()[(dist.abs() > 1.0) & (dist < 4.0) & (dist > -4.0) & (y < 16)].max()) < 0.1 * (
        NEAR - 0.2)
