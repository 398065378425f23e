"""Quality of the 3D Ken Burns disocclusion fills against exactly rendered ground truth.

Each scene is procedural and layered, drawn in a cartoon style (flat colours, dark outlines, regular patterns): a
far wall (sky with clouds and hills, bricks, stripes, tiles, dots or planks), a receding ground plane with its own
pattern, two to four mid-ground cards (houses with windows, trees, fences) and one or two characters (outlined
bodies with heads) near the camera. Every surface is analytic, so the view of any camera pose is ray cast exactly
(2x2 supersampling): the input view gives the image, the depth (nearness, larger = nearer) and the characters' soft
masks; the novel views along the camera path are the ground truth. For each ground-truth pixel the ray caster also
knows whether the surface point it shows was visible in the input (re-cast from the input camera): pixels where
at least half of the samples were hidden there are the **disoccluded** pixels.

The renderer gets exactly what the pipeline would: image, depth, character masks and a PatchMatch plate of the
characters' area (patch 3, the CLI's mask dilated 5 px), and renders the same poses once per fill method: ``far-side``,
``patchmatch`` (the default: end-view inpainting of every disocclusion, the background revealed behind the
characters included) and ``patchmatch+plate`` (the same, but behind the characters the plate is shown as given:
``character_reveals="plate"``, the renderer's behaviour before the reveals were inpainted, and what a user with a
real, drawn background plate would choose). Reported
per method: PSNR and SSIM (11x11 Gaussian window, sigma 1.5, averaged over the pixels in question) on the
disoccluded pixels only (all of them, and the "interior" ones more than a pixel away from an occluding contour of the
true view, whose mixed colours depend on sub-pixel contour positions rather than on the fill), split into those at
depth edges of the background and those behind the characters (each split again by the surface the true view
shows there: the far ``wall``, the ``ground`` plane, or ``cards``, the mid-ground houses, trees and fences), and on
all other pixels ("elsewhere", where no regression is allowed), plus the render time. The issue's target: the
default fill beats ``far-side`` by >= 3 dB PSNR on the disoccluded pixels with no regression elsewhere.

Usage (one command; ``--quick`` is the CI smoke run)::

    python bench/bench_kenburns_quality.py [--scenes 6] [--first-scene 0] [--size 384] [--frames 9] [--cameras auto,pan-right,zoom-in]
        [--fills far-side,patchmatch+plate,patchmatch] [--plates truth,patchmatch[,planar-truth]] [--threads 1]
        [--depth exact|estimator-like] [--depth-blur PX] [--depth-noise SIGMA] [--depth-noise-scale PX]
        [--[no-]depth-affine]
        [--json OUT] [--images DIR] [--quick]

Each fill runs twice: with the exact background plate (``truth``: ``far-side`` and ``patchmatch+plate`` differ only
in the holes the camera opens at depth edges, ``patchmatch`` inpaints the reveals behind the characters instead of
showing the exact plate) and with the plate the pipeline makes (``patchmatch``: what a user gets). A third plate,
``planar-truth`` (not run by default), is an oracle for the analysis of the error behind the characters: exact where
the hidden surface is the far wall or the ground plane, the pipeline's PatchMatch where it is a mid-ground card.
``--depth estimator-like`` gives the renderer the depth a monocular estimator would (:func:`degrade_depth`: edges
blurred into ramps, noise, an unknown affine disparity transform; deterministic per scene) instead of the exact
one; the true views stay the exact scene's, so wrong geometry costs everywhere, as it does for a user.
``--first-scene 6 --scenes 6`` scores six held-out scenes (seeds 6-11) that a change tuned on the default scenes
0-5 never saw: each scene is the same whatever the run's first scene.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _json_out import JSON_HELP, add_overwrite_argument, check_json, write_json  # noqa: E402  (bench/: --json FILE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cartoonseg.kenburns import CameraPath, KenBurnsConfig, build_scene, render_kenburns, resolve_poses  # noqa: E402
from cartoonseg.kenburns.render import coverage_counter  # noqa: E402

Tensor = torch.Tensor
SUPERSAMPLE = 2
# Background plates the renderer can be given (see evaluate and planar_truth_plate).
PLATES = ("truth", "patchmatch", "planar-truth")
# Kinds of surface a disoccluded pixel can show (the summary splits the edges and behind-the-characters by them).
SURFACES = ("wall", "ground", "cards")


# ---------------------------------------------------------------------------------------------- textures
def _hash(*xs: Tensor) -> Tensor:
    """Deterministic pseudo-random value in [0,1) per integer cell."""
    h = torch.zeros_like(xs[0], dtype=torch.float64)
    for i, x in enumerate(xs):
        h = h + x.double() * (12.9898 + 78.233 * i)
    return torch.frac(torch.sin(h) * 43758.5453).float().abs()


def _mix(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask[..., None], a, b)


def _rgb(values, n: int) -> Tensor:
    return torch.tensor(values, dtype=torch.float32).expand(n, 3)


def _line(d: Tensor, width: Tensor) -> Tensor:
    """Inside a line of ``width`` around the zero set of a distance-like coordinate ``d``."""
    return d.abs() < 0.5 * width


def texture_bricks(a, b, lw, rnd, colours):
    hgt = rnd.uniform(14.0, 22.0)
    wid = hgt * rnd.uniform(2.0, 2.8)
    row = torch.floor(b / hgt)
    shift = (row % 2) * 0.5 * wid
    col = torch.floor((a + shift) / wid)
    fa = (a + shift) - (col + 0.5) * wid
    fb = b - (row + 0.5) * hgt
    mortar = (fa.abs() > 0.5 * wid - 0.5 * lw) | (fb.abs() > 0.5 * hgt - 0.5 * lw)
    shade = 0.85 + 0.15 * _hash(row, col)
    base = colours[0][None] * shade[..., None]
    return _mix(mortar, colours[1][None].expand_as(base), base)


def texture_stripes(a, b, lw, rnd, colours):
    theta = rnd.uniform(0, math.pi)
    period = rnd.uniform(16.0, 28.0)
    t = (a * math.cos(theta) + b * math.sin(theta)) / period
    band = torch.floor(t) % 2 == 0
    edge = _line((t - torch.round(t)) * period, lw)
    out = _mix(band, colours[0][None].expand(*a.shape, 3), colours[1][None].expand(*a.shape, 3))
    return _mix(edge, colours[2][None].expand_as(out), out)


def texture_tiles(a, b, lw, rnd, colours):
    size = rnd.uniform(18.0, 30.0)
    i, j = torch.floor(a / size), torch.floor(b / size)
    check = (i + j) % 2 == 0
    grout = _line(a - torch.round(a / size) * size, lw) | _line(b - torch.round(b / size) * size, lw)
    out = _mix(check, colours[0][None].expand(*a.shape, 3), colours[1][None].expand(*a.shape, 3))
    return _mix(grout, colours[2][None].expand_as(out), out)


def texture_dots(a, b, lw, rnd, colours):
    period = rnd.uniform(18.0, 28.0)
    radius = period * rnd.uniform(0.22, 0.32)
    row = torch.floor(b / period)
    shift = (row % 2) * 0.5 * period
    da = (a + shift) - (torch.floor((a + shift) / period) + 0.5) * period
    db = b - (row + 0.5) * period
    r = torch.sqrt(da * da + db * db)
    out = _mix(r < radius, colours[1][None].expand(*a.shape, 3), colours[0][None].expand(*a.shape, 3))
    return _mix(_line(r - radius, lw), colours[2][None].expand_as(out), out)


def texture_planks(a, b, lw, rnd, colours):
    width = rnd.uniform(12.0, 20.0)
    col = torch.floor(a / width)
    shade = 0.75 + 0.25 * _hash(col, torch.zeros_like(col))
    out = colours[0][None] * shade[..., None]
    seam = _line(a - torch.round(a / width) * width, lw)
    return _mix(seam, colours[2][None].expand_as(out), out)


def texture_sky(a, b, lw, rnd, colours):
    """Vertical gradient, round clouds, a zigzag of hills with an outline (b grows downwards)."""
    top, bottom = torch.tensor([0.45, 0.65, 0.95]), torch.tensor([0.75, 0.88, 1.0])
    t = (b + 130.0).clamp(0, 130) / 130
    out = top[None] * (1 - t[..., None]) + bottom[None] * t[..., None]
    cloud = torch.zeros_like(a, dtype=torch.bool)
    for _ in range(6):
        cx, cy, r = rnd.uniform(-200, 200), rnd.uniform(-110, -50), rnd.uniform(10, 22)
        for dx in (-r * 0.8, 0.0, r * 0.8):
            cloud |= (a - cx - dx) ** 2 + (b - cy) ** 2 < (r * (0.75 if dx else 1.0)) ** 2
    out = _mix(cloud, torch.tensor([0.98, 0.98, 1.0])[None].expand_as(out), out)
    period, amp, base = rnd.uniform(60, 100), rnd.uniform(15, 30), rnd.uniform(-15, 0)
    ridge = base - amp * (1 - 2 * ((a / period) % 1.0 - 0.5).abs() * 2).abs()
    hill = b > ridge
    out = _mix(hill, colours[0][None].expand_as(out), out)
    return _mix(_line(b - ridge, 1.6 * lw), colours[2][None].expand_as(out), out)


TEXTURES: dict[str, Callable] = {
    "bricks": texture_bricks,
    "stripes": texture_stripes,
    "tiles": texture_tiles,
    "dots": texture_dots,
    "planks": texture_planks,
    "sky": texture_sky,
}
PALETTE = [
    (0.85, 0.45, 0.35), (0.95, 0.85, 0.55), (0.55, 0.75, 0.45), (0.45, 0.6, 0.85), (0.9, 0.6, 0.75),
    (0.6, 0.45, 0.3), (0.95, 0.95, 0.9), (0.7, 0.7, 0.75), (0.4, 0.7, 0.7), (0.98, 0.7, 0.3),
]
INK = (0.12, 0.1, 0.12)


def _colours(rnd) -> list[Tensor]:
    a, b = rnd.sample(PALETTE, 2)
    return [torch.tensor(a), torch.tensor(b), torch.tensor(INK)]


# ---------------------------------------------------------------------------------------------- scene
@dataclass
class Layer:
    """One analytic surface: a fronto-parallel card at depth ``z`` (``kind="card"``) or the ground plane
    ``Y = height`` (``kind="ground"``, visible for ``Z`` up to ``z``). ``shape(a, b)`` says where the card exists
    (plane coordinates: X, Y for cards, X, Z for the ground), ``colour(a, b, lw)`` what it shows; ``lw`` is the
    outline width in plane units (1.5 px at the surface's depth)."""

    kind: str
    z: float
    shape: Callable[[Tensor, Tensor], Tensor]
    colour: Callable[[Tensor, Tensor, Tensor], Tensor]
    character: bool = False
    height: float = 0.0


def _outlined(shape_d: Callable, fill: Callable) -> tuple[Callable, Callable]:
    """A card from a signed distance ``shape_d(a, b)`` (< 0 inside): shape and colour with an ink outline."""

    def shape(a, b):
        return shape_d(a, b) < 0

    def colour(a, b, lw):
        out = fill(a, b, lw)
        return _mix(shape_d(a, b) > -lw, torch.tensor(INK)[None].expand_as(out), out)

    return shape, colour


def _box_d(cx, cy, hw, hh):
    return lambda a, b: torch.maximum((a - cx).abs() - hw, (b - cy).abs() - hh)


def _ellipse_d(cx, cy, rx, ry):
    return lambda a, b: (torch.sqrt(((a - cx) / rx) ** 2 + ((b - cy) / ry) ** 2) - 1.0) * min(rx, ry)


def make_scene(seed: int, aspect: float, focal: float = 192.0) -> list[Layer]:
    """A random layered cartoon scene (see the module docstring). World units: the input camera is at the origin
    looking along +Z, the focal length is half the long image side; the image spans X/Z in about [-1, 1].
    Patterns are sized in pixels of the input view (``focal`` given), so every scene has the same look at any
    resolution."""
    import random

    rnd = random.Random(seed)
    wall_z = rnd.uniform(12.0, 20.0)
    ground_y = rnd.uniform(0.45, 0.6)  # ground plane below the camera (Y grows downwards)
    layers: list[Layer] = []
    # far wall: sky, or a patterned wall
    wall_kind = rnd.choice(["sky", "bricks", "stripes", "tiles", "dots", "planks"])
    wall_cols = _colours(rnd)
    wall_tex = TEXTURES[wall_kind]
    wall_rnd = random.Random(rnd.random())
    wall_state = wall_rnd.getstate()

    def wall_colour(a, b, lw, tex=wall_tex, cols=wall_cols, st=wall_state):
        r = random.Random()
        r.setstate(st)
        scale = focal / wall_z  # pixels of the input view
        return tex(a * scale, b * scale, lw * scale, r, cols)

    layers.append(Layer("card", wall_z, lambda a, b: torch.ones_like(a, dtype=torch.bool), wall_colour))
    # ground plane
    ground_kind = rnd.choice(["tiles", "planks", "stripes", "bricks"])
    ground_cols = _colours(rnd)
    g_state = random.Random(rnd.random()).getstate()

    def ground_colour(a, b, lw, tex=TEXTURES[ground_kind], cols=ground_cols, st=g_state):
        r = random.Random()
        r.setstate(st)
        scale = focal / 3.0  # pixels at depth 3
        return tex(a * scale, b * scale, lw * scale, r, cols)

    layers.append(Layer("ground", wall_z, lambda a, b: torch.ones_like(a, dtype=torch.bool), ground_colour,
                        height=ground_y))
    # mid-ground cards
    for i in range(rnd.randint(2, 4)):
        z = rnd.uniform(1.3, 3.0)
        x = rnd.uniform(-0.85, 0.85) * z
        kind = rnd.choice(["house", "tree", "fence"])
        cols = _colours(rnd)
        st = random.Random(rnd.random()).getstate()
        ground_at = ground_y  # cards stand on the ground
        if kind == "house":
            hw, hh = rnd.uniform(0.3, 0.5) * z / 2.5, rnd.uniform(0.35, 0.6) * z / 2.5
            body = _box_d(x, ground_at - hh, hw, hh)
            roof_h = hh * 0.8

            def house_d(a, b, body=body, x=x, top=ground_at - 2 * hh, hw=hw, rh=roof_h):
                roof = torch.maximum((a - x).abs() / (hw * 1.15) + (top - b) / rh - 1.0, b - top) * rh * 0.5
                return torch.minimum(body(a, b), roof)

            def house_fill(a, b, lw, cols=cols, st=st, x=x, top=ground_at - 2 * hh, z=z):
                r = random.Random()
                r.setstate(st)
                sc = focal / z
                out = texture_planks(a * sc, b * sc, lw * sc, r, cols) if r.random() < 0.5 else \
                    texture_bricks(a * sc, b * sc, lw * sc, r, cols)
                roof = b < top
                out = _mix(roof, (cols[1] * 0.8)[None].expand_as(out), out)
                win = 0.05 * z
                wa = (a - x) - torch.round((a - x) / (3 * win)) * 3 * win
                wb = b - torch.round(b / (3 * win)) * 3 * win
                window = (wa.abs() < win) & (wb.abs() < win) & ~roof & (b < ground_at - 2 * win)
                out = _mix(window, torch.tensor([0.95, 0.9, 0.5])[None].expand_as(out), out)
                frame = window & ((wa.abs() > win - lw) | (wb.abs() > win - lw))
                return _mix(frame, torch.tensor(INK)[None].expand_as(out), out)

            shape, colour = _outlined(house_d, house_fill)
        elif kind == "tree":
            r_c = rnd.uniform(0.25, 0.4) * z / 2.5
            trunk_h = r_c * 1.4
            crown = _ellipse_d(x, ground_at - trunk_h - r_c * 0.8, r_c, r_c * 0.9)
            trunk = _box_d(x, ground_at - trunk_h / 2, r_c * 0.18, trunk_h / 2)

            def tree_d(a, b, crown=crown, trunk=trunk):
                return torch.minimum(crown(a, b), trunk(a, b))

            def tree_fill(a, b, lw, crown=crown, cols=cols, z=z):
                green = torch.tensor([0.35, 0.65, 0.3])
                out = torch.tensor([0.5, 0.35, 0.2])[None].expand(*a.shape, 3)
                leaf = crown(a, b) < 0
                out = _mix(leaf, green[None].expand_as(out), out)
                dots = ((torch.sin(a * focal / z / 3) * torch.sin(b * focal / z / 3)) > 0.7) & leaf
                return _mix(dots, (green * 0.7)[None].expand_as(out), out)

            shape, colour = _outlined(tree_d, tree_fill)
        else:
            hw, hh = rnd.uniform(0.5, 0.9) * z / 2.5, rnd.uniform(0.15, 0.25) * z / 2.5
            fence = _box_d(x, ground_at - hh, hw, hh)

            def fence_fill(a, b, lw, cols=cols, st=st, z=z):
                r = random.Random()
                r.setstate(st)
                return texture_planks(a * focal / z, b * focal / z, lw * focal / z, r, cols)

            shape, colour = _outlined(fence, fence_fill)
        layers.append(Layer("card", z, shape, colour))
    # characters: outlined bodies with heads, the nearest at Z = 1
    n_char = rnd.randint(1, 2)
    for i in range(n_char):
        z = 1.0 if i == 0 else rnd.uniform(1.2, 1.6)
        x = rnd.uniform(-0.55, 0.55) * z
        body_h = rnd.uniform(0.16, 0.24)
        body_w = body_h * rnd.uniform(0.45, 0.6)
        feet = ground_y
        body = _ellipse_d(x, feet - body_h, body_w, body_h)
        head_r = body_w * 0.8
        head = _ellipse_d(x, feet - 2 * body_h - head_r * 0.7, head_r, head_r)
        cols = _colours(rnd)

        def char_d(a, b, body=body, head=head):
            return torch.minimum(body(a, b), head(a, b))

        def char_fill(a, b, lw, head=head, cols=cols, x=x, hr=head_r, hy=feet - 2 * body_h - head_r * 0.7):
            skin = torch.tensor([0.98, 0.85, 0.75])
            out = _mix(head(a, b) < 0, skin[None].expand(*a.shape, 3), cols[0][None].expand(*a.shape, 3))
            stripe = (torch.floor(b / (hr * 0.5)) % 2 == 0) & ~(head(a, b) < 0)
            out = _mix(stripe, (cols[0] * 0.8)[None].expand_as(out), out)
            for ex in (-0.35, 0.35):
                eye = ((a - x - ex * hr) ** 2 + (b - hy) ** 2) < (0.12 * hr) ** 2
                out = _mix(eye, torch.tensor(INK)[None].expand_as(out), out)
            return out

        shape, colour = _outlined(char_d, char_fill)
        layers.append(Layer("card", z, shape, colour, character=True))
    return layers


# ---------------------------------------------------------------------------------------------- ray casting
def _rays(pose: Tensor, focal: float, size: tuple[int, int], ss: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample ray directions (per unit Z) of the renderer's camera model (see cartoonseg.kenburns.camera):
    ``x' = c_x + p_x + k f (X - t_x) / (Z - t_z)``. Returns dx, dy ``[H*ss, W*ss]`` and the origin ``t``."""
    h, w = size
    tx, ty, tz, k, px, py = (float(v) for v in pose)
    off = (torch.arange(ss, dtype=torch.float64) + 0.5) / ss - 0.5
    ys = (torch.arange(h, dtype=torch.float64)[:, None] + off[None, :]).reshape(-1)
    xs = (torch.arange(w, dtype=torch.float64)[:, None] + off[None, :]).reshape(-1)
    dx = ((xs - 0.5 * (w - 1) - px) / (k * focal))[None, :].expand(h * ss, w * ss)
    dy = ((ys - 0.5 * (h - 1) - py) / (k * focal))[:, None].expand(h * ss, w * ss)
    return dx, dy, torch.tensor([tx, ty, tz], dtype=torch.float64)


def _hits(layers: list[Layer], dx: Tensor, dy: Tensor, origin: Tensor):
    """Nearest surface per ray: layer index, plane coordinates (a, b) and depth Z."""
    tx, ty, tz = (float(v) for v in origin)
    best_s = torch.full(dx.shape, float("inf"), dtype=torch.float64)
    best_i = torch.full(dx.shape, -1, dtype=torch.long)
    best_a = torch.zeros(dx.shape, dtype=torch.float64)
    best_b = torch.zeros(dx.shape, dtype=torch.float64)
    for i, layer in enumerate(layers):
        if layer.kind == "card":
            s = torch.full(dx.shape, layer.z - tz, dtype=torch.float64)
            a, b = tx + s * dx, ty + s * dy
        else:  # ground: ty + s dy = height, up to the wall's depth
            s = (layer.height - ty) / torch.where(dy.abs() > 1e-12, dy, torch.full_like(dy, 1e-12))
            a, b = tx + s * dx, tz + s  # plane coordinates X, Z
            s = torch.where((dy > 0) & (b < layer.z), s, torch.full_like(s, float("inf")))
        ok = (s > 1e-6) & (s < best_s) & layer.shape(a.float(), b.float())
        best_s = torch.where(ok, s, best_s)
        best_i = torch.where(ok, i, best_i)
        best_a = torch.where(ok, a, best_a)
        best_b = torch.where(ok, b, best_b)
    return best_i, best_a, best_b, best_s + tz


def _world_point(layers, idx, a, b, z):
    """World X, Y, Z of hits."""
    x = a.clone()
    y = b.clone()
    zz = z.clone()
    for i, layer in enumerate(layers):
        if layer.kind == "ground":
            sel = idx == i
            y = torch.where(sel, torch.full_like(y, layer.height), y)
            zz = torch.where(sel, b, zz)
    return x, y, zz


def _shade(layers, idx, a, b, z, focal):
    out = torch.zeros(*idx.shape, 3)
    for i, layer in enumerate(layers):
        sel = idx == i
        if not bool(sel.any()):
            continue
        lw = (1.5 * z[sel] / focal).float()
        out[sel] = layer.colour(a[sel].float(), b[sel].float(), lw)
    return out


def _down(x: Tensor, ss: int) -> Tensor:
    """Average ``[H*ss, W*ss, C]`` -> ``[H, W, C]``."""
    return F.avg_pool2d(x.permute(2, 0, 1)[None], ss)[0].permute(1, 2, 0)


def render_truth(layers, pose: Tensor, focal: float, size: tuple[int, int], ss: int = SUPERSAMPLE):
    """Exact view of ``pose``: colour ``[H,W,3]``, nearest depth per pixel, and per-sample hits."""
    dx, dy, origin = _rays(pose, focal, size, ss)
    idx, a, b, z = _hits(layers, dx, dy, origin)
    colour = _shade(layers, idx, a, b, z, focal)
    return _down(colour, ss).clamp(0, 1), (idx, a, b, z)


def visible_in_input(layers, hits, focal: float, size: tuple[int, int]) -> Tensor:
    """Per sample: whether the surface point it shows is the first hit of the input camera's ray through it."""
    idx, a, b, z = hits
    h, w = size
    x, y, zz = _world_point(layers, idx, a, b, z)
    # input camera: identity pose, ray direction per unit Z through the point
    dx, dy = x / zz, y / zz
    idx0, _, _, z0 = _hits(layers, dx, dy, torch.zeros(3, dtype=torch.float64))
    return (idx0 == idx) & ((z0 - zz).abs() <= 1e-6 * zz.abs().clamp_min(1.0))


# ---------------------------------------------------------------------------------------------- metrics
def _gauss_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x: Tensor, y: Tensor) -> Tensor:
    """SSIM map ``[H,W]`` of two ``[H,W,3]`` images in [0,1] (Wang et al. 2004; channel mean)."""
    win = _gauss_window().expand(3, 1, 11, 11)
    a, b = x.permute(2, 0, 1)[None].double(), y.permute(2, 0, 1)[None].double()
    win = win.double()

    def f(t):
        return F.conv2d(F.pad(t, (5, 5, 5, 5), mode="reflect"), win, groups=3)

    mu_a, mu_b = f(a), f(b)
    saa, sbb, sab = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s[0].mean(0).float()


@dataclass
class Acc:
    se: float = 0.0
    n: int = 0
    ssim: float = 0.0

    def add(self, pred: Tensor, truth: Tensor, mask: Tensor, smap: Tensor) -> None:
        if int(mask.sum()) == 0:
            return
        self.se += float(((pred - truth) ** 2)[mask].sum()) / 3.0
        self.n += int(mask.sum())
        self.ssim += float(smap[mask].sum())

    def psnr(self) -> float:
        return 10 * math.log10(1.0 / max(self.se / max(self.n, 1), 1e-12)) if self.n else float("nan")

    def mean_ssim(self) -> float:
        return self.ssim / self.n if self.n else float("nan")


# ---------------------------------------------------------------------------------------------- benchmark
def scene_inputs(layers, size: tuple[int, int]):
    """The input view: image, nearness (the nearest sample of each pixel, scaled so the nearest point has
    nearness 1), soft character masks, and the depth scale."""
    h, w = size
    focal = max(h, w) / 2.0
    image, (idx, _, _, z) = render_truth(layers, torch.tensor([0, 0, 0, 1.0, 0, 0]), focal, size)
    ss = SUPERSAMPLE
    zmin = F.max_pool2d((-z.float())[None, None], ss)[0, 0].neg()  # nearest sample per pixel
    near = 1.0 / zmin
    scale = float(zmin.min())  # renderer depth = Z / scale
    masks = []
    for i, layer in enumerate(layers):
        if layer.character:
            m = _down((idx == i).float()[..., None], ss)[..., 0]
            if float(m.max()) > 0.5:
                masks.append(m)
    masks = torch.stack(masks) if masks else torch.zeros(0, h, w)
    return image, near * scale, masks, scale


#: ``--depth estimator-like``: the blur (Gaussian sigma, px), the multiplicative noise (log-space sigma) and the
#: affine disparity transform of :func:`degrade_depth`, about what a monocular estimator's relative depth (Depth
#: Anything V2 and the like) shows against the truth: ramps over a few pixels at depth edges, percent-level local
#: noise, an unknown scale and shift of the disparity and a slight tilt of its planes.
ESTIMATOR_LIKE = {"blur": 1.5, "noise": 0.03, "noise_scale": 3.0, "affine": True}


def degrade_depth(near: Tensor, seed: int, *, blur: float = 0.0, noise: float = 0.0, noise_scale: float = 3.0,
                  affine: bool = False) -> Tensor:
    """The exact nearness ``near`` ``[H,W]`` (disparity, > 0) as a depth estimator would give it, deterministic for
    a scene ``seed``, positive and of the same shape:

    - ``blur``: Gaussian blur of the disparity with this sigma (px): depth edges become ramps, as an estimator's
      (which sees the image at its own, lower resolution) are;
    - ``affine``: ``s * (d + t + g . (u, v))``, an unknown scale ``s`` in [0.5, 2] and shift ``t`` in [0.02, 0.15]
      (relative to the nearest point's disparity; the renderer normalises the scale away but not the shift, which
      flattens the scene) and a tilt ``g`` of at most 0.04 across the image (planes stay planes, slightly turned);
    - ``noise``: multiplicative noise ``exp(noise * n)``, ``n`` unit Gaussian noise smoothed over ``noise_scale`` px
      (Gaussian sigma): an estimator's output is smooth within a surface but wobbles over a few of its patches
      (Depth Anything V2 sees 14-px ViT patches of a 518-px input, about 7 px of a 256-px image); per-pixel noise
      (``noise_scale`` below 1) tears every surface apart in a moved view, which no estimator's output does.

    With all three off it returns ``near`` unchanged."""
    from cartoonseg.style.hints import gaussian_blur

    check_depth_settings(blur=blur, noise=noise, noise_scale=noise_scale, affine=affine)
    out = near.double()
    if blur == 0 and noise == 0 and not affine:
        return near
    gen = torch.Generator().manual_seed(1_000_003 * int(seed) + 17)
    peak = float(out.max())
    if blur > 0:
        out = gaussian_blur(out[None, None], blur, truncate=3.0)[0, 0]
    if affine:
        h, w = out.shape
        scale = math.exp(math.log(2.0) * (2 * float(torch.rand((), generator=gen, dtype=torch.float64)) - 1))
        shift = (0.02 + 0.13 * float(torch.rand((), generator=gen, dtype=torch.float64))) * peak
        gx, gy = (0.04 * (2 * torch.rand(2, generator=gen, dtype=torch.float64) - 1) * peak).tolist()
        v = torch.linspace(-0.5, 0.5, h, dtype=torch.float64)[:, None]
        u = torch.linspace(-0.5, 0.5, w, dtype=torch.float64)[None, :]
        # the tilt never takes more than 0.04 of the peak: the shift's floor (0.02) plus the far wall's nearness
        # keep the result positive; clamped below all the same
        out = scale * (out + shift + gx * u + gy * v).clamp_min(1e-3 * peak)
    if noise > 0:
        n = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        n = gaussian_blur(n[None, None], noise_scale, 3.0)[0, 0]
        out = out * torch.exp(noise * n / n.std().clamp_min(1e-12))
    return out.to(near.dtype)


def check_depth_settings(*, blur: float, noise: float, noise_scale: float, affine: bool) -> None:
    """ValueError naming a bad :func:`degrade_depth` setting and what is allowed."""
    if not (blur >= 0 and math.isfinite(blur)) or not 0 <= noise < 0.5 or not 0 < noise_scale <= 64:
        raise ValueError(f"depth degradation: blur must be >= 0 px, noise in [0, 0.5) and noise scale in (0, 64] "
                         f"px, got blur={blur}, noise={noise}, noise scale={noise_scale}")


def depth_settings(args) -> dict:
    """The ``--depth`` preset with the explicit ``--depth-blur``/``--depth-noise``/``--depth-affine`` over it."""
    base = dict(ESTIMATOR_LIKE) if args.depth == "estimator-like" else \
        {"blur": 0.0, "noise": 0.0, "noise_scale": ESTIMATOR_LIKE["noise_scale"], "affine": False}
    if args.depth_blur is not None:
        base["blur"] = args.depth_blur
    if args.depth_noise is not None:
        base["noise"] = args.depth_noise
    if args.depth_noise_scale is not None:
        base["noise_scale"] = args.depth_noise_scale
    if args.depth_affine is not None:
        base["affine"] = args.depth_affine
    return base


def evaluate(args) -> dict:
    size = (args.size * 2 // 3, args.size)
    h, w = size
    focal = max(h, w) / 2.0
    fills = args.fills.split(",")
    cameras = args.cameras.split(",")
    plates = args.plates.split(",")
    unknown = sorted(set(plates) - set(PLATES))
    if unknown:
        raise ValueError(f"--plates: unknown plate(s) {unknown}; allowed: {', '.join(PLATES)}")
    runs = [(p, f) for p in plates for f in fills]
    depth = depth_settings(args)
    check_depth_settings(**depth)  # bad values are refused before the first scene
    keys = ("disoccluded", "disoccluded_interior", "edges", "behind_characters", "elsewhere") + tuple(
        f"{region}/{surface}" for region in ("edges", "behind_characters") for surface in SURFACES)
    acc = {r: {k: Acc() for k in keys} for r in runs}
    timing = {r: 0.0 for r in runs}
    per_scene = []
    pictures = []
    for seed in range(args.first_scene, args.first_scene + args.scenes):
        layers = make_scene(seed, w / h, focal)
        image, near, masks, scale = scene_inputs(layers, size)
        # what the renderer gets as depth (the exact nearness, or as an estimator would give it); the ground truth
        # and the scale between renderer and world units stay the exact scene's
        near = degrade_depth(near, seed, **depth)
        char_support = (masks.amax(0) > 1 / 255) if masks.shape[0] else torch.zeros(h, w, dtype=torch.bool)
        # what the pipeline makes (see _pipeline_plate), computed once for the plates built on it
        pipeline = _pipeline_plate(image, masks) if {"patchmatch", "planar-truth"} & set(plates) else None
        plate_of = {}
        for plate_kind in plates:
            if plate_kind == "truth":  # the exact background behind the characters
                plate_of[plate_kind], _ = render_truth([la for la in layers if not la.character],
                                                       torch.tensor([0, 0, 0, 1.0, 0, 0]), focal, size)
            elif plate_kind == "patchmatch":
                plate_of[plate_kind] = pipeline
            else:  # planar-truth: exact where the hidden surface is the wall or the ground, else the pipeline's
                plate_of[plate_kind] = planar_truth_plate(layers, pipeline, focal, size)
        for cam_name in cameras:
            camera = CameraPath(preset=cam_name, frames=args.frames, playback=False)
            scene = build_scene(image, near, masks, plate_of[plates[0]])
            poses = resolve_poses(camera, scene.depth, coverage_fn=coverage_counter(scene) if cam_name == "auto" else None)
            truths = []
            for p in poses.poses[1:]:  # frame 0 of most paths is (nearly) the input view
                pose = p.clone().double()
                pose[0:3] *= scale  # renderer units -> world units
                truth, hits = render_truth(layers, pose, focal, size)
                vis = visible_in_input(layers, hits, focal, size).float()
                disocc = _down((1 - vis)[..., None], SUPERSAMPLE)[..., 0] >= 0.5
                truths.append((truth, disocc, _silhouettes(hits[3]), surface_of(layers, hits[0])))
            row = {"scene": seed, "camera": cam_name}
            for run in runs:
                plate_kind, fill = run
                t0 = time.perf_counter()
                clip = render_kenburns(image, near, masks=masks, background=plate_of[plate_kind], camera=camera,
                                       config=fill_config(fill))
                timing[run] += time.perf_counter() - t0
                sc = {k: Acc() for k in keys}
                for j, (truth, disocc, rim, surface) in enumerate(truths):
                    pred = clip.frames[j + 1]
                    smap = ssim_map(pred, truth)
                    # behind the characters: disoccluded pixels whose surface the characters' footprint hid
                    behind = disocc & _behind_mask(char_support, poses.poses[j + 1], scene)
                    regions = [("disoccluded", disocc), ("disoccluded_interior", disocc & ~rim),
                               ("edges", disocc & ~behind), ("behind_characters", behind), ("elsewhere", ~disocc)]
                    regions += [(f"{name}/{kind}", m & (surface == k)) for name, m in regions[2:4]
                                for k, kind in enumerate(SURFACES)]
                    for key, m in regions:
                        acc[run][key].add(pred, truth, m, smap)
                        sc[key].add(pred, truth, m, smap)
                    if args.images and seed == args.first_scene and j == len(truths) - 1 and cam_name == cameras[0]:
                        pictures.append((f"{plate_kind}_{fill}", pred, truth, disocc, image))
                row[f"{plate_kind}/{fill}"] = {k: round(v.psnr(), 2) for k, v in sc.items()}
            per_scene.append(row)
            print(json.dumps(_strict_json(row), allow_nan=False), flush=True)
    if args.images and pictures:
        _save_pictures(Path(args.images), pictures)
    summary = {
        f"{p}/{f}": {k: {"psnr": round(v.psnr(), 2), "ssim": round(v.mean_ssim(), 4), "pixels": v.n}
                     for k, v in acc[(p, f)].items()} | {"render_s": round(timing[(p, f)], 1)}
        for p, f in runs
    }
    return {"summary": summary, "per_scene": per_scene}


def _pipeline_plate(image: Tensor, masks: Tensor) -> Tensor | None:
    """The plate the pipeline makes: PatchMatch (patch 3) over the characters' union grown by 5 px."""
    from cartoonseg.inpaint import background_mask, patchmatch_inpaint

    hole = background_mask(masks, dilate=5) > 0.5 if masks.shape[0] else None
    return patchmatch_inpaint(image, hole, patch_size=3) if hole is not None and bool(hole.any()) else None


def planar_truth_plate(layers, plate: Tensor | None, focal: float, size: tuple[int, int]) -> Tensor | None:
    """An oracle plate: exact where the surface hidden behind the characters is the far wall or the ground plane
    (the best any planar-structure completion could do: both are planes with regular patterns), the pipeline's
    PatchMatch ``plate`` (:func:`_pipeline_plate`) where it is a mid-ground card (a house, tree or fence whose hidden
    part no fill can know). It bounds how much of the error behind the characters a better completion of the planes
    could remove."""
    if plate is None:
        return None
    background = [la for la in layers if not la.character]
    truth, (idx, _, _, _) = render_truth(background, torch.tensor([0, 0, 0, 1.0, 0, 0]), focal, size)
    planar = surface_of(background, idx) < SURFACES.index("cards")
    return torch.where(planar[..., None], truth, plate)


def fill_config(fill: str) -> KenBurnsConfig:
    """A fill name of the benchmark: one of the renderer's fills, with options after ``+``: ``plate`` (the plate
    shown behind the characters instead of inpainting what the key views reveal there), ``noplanes`` (no plane
    guidance: every hole inpainted in image space), ``edges`` / ``noedges`` (depth-edge refinement on / off, see
    ``KenBurnsConfig.depth_refine``), e.g. ``patchmatch+plate``, ``patchmatch+noplanes``, ``far-side+edges``."""
    name, *options = fill.split("+")
    unknown = sorted(set(options) - {"plate", "noplanes", "edges", "noedges"})
    if unknown:
        raise ValueError(f"--fills: unknown option(s) {unknown} in {fill!r}; allowed after '+': plate, noplanes, "
                         f"edges, noedges")
    refine = True if "edges" in options else False if "noedges" in options else KenBurnsConfig.depth_refine
    return KenBurnsConfig(fill=name, character_reveals="plate" if "plate" in options else "key-views",
                          depth_refine=refine,
                          plane_guidance="noplanes" not in options)


def surface_of(layers, idx: Tensor) -> Tensor:
    """Per pixel of a true view, which kind of surface it shows (an index into :data:`SURFACES`): the far wall, the
    ground plane (the two planes with regular patterns) or a card (a mid-ground house, tree or fence, or a
    character); the kind most of the pixel's samples hit."""
    kind = torch.full_like(idx, 2)
    for i, layer in enumerate(layers):
        if layer.kind == "ground":
            kind = torch.where(idx == i, 1, kind)
    kind = torch.where(idx == 0, 0, kind)  # layer 0 is the far wall (see make_scene)
    votes = _down(F.one_hot(kind, len(SURFACES)).float(), SUPERSAMPLE)
    return votes.argmax(-1)


def _silhouettes(z: Tensor) -> Tensor:
    """Pixels within one pixel of an occluding contour of the true view (a neighbour or a sample of the pixel is
    more than 10 % nearer): their colour mixes two surfaces and any sub-pixel difference of the contour decides
    it, whatever the fill."""
    zf = z.float()[None, None]
    near = -F.max_pool2d(-zf, SUPERSAMPLE)[0, 0]
    far = F.max_pool2d(zf, SUPERSAMPLE)[0, 0]
    nbr = -F.max_pool2d(-near[None, None], 3, 1, 1)[0, 0]
    return (nbr < near * 0.9) | (far > near * 1.1)


def _behind_mask(char_support: Tensor, pose: Tensor, scene) -> Tensor:
    """Pixels of the view ``pose`` where the background layer shows points that the characters covered in the
    input (the plate region), splatted like the renderer does."""
    from cartoonseg.kenburns.pointcloud import splat, unproject

    feats = char_support.float()[None]
    cloud = unproject(scene.background_depth, feats)
    out = splat(cloud, pose[None], max(scene.size) / 2.0, scene.size)
    return out.features[0, 0] > 0.5


def _save_pictures(folder: Path, pictures) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, pred, _, _, _ in pictures:
        Image.fromarray((pred.clamp(0, 1) * 255 + 0.5).byte().numpy()).save(folder / f"quality_{name}.png")
    truth, disocc, image = pictures[0][2], pictures[0][3], pictures[0][4]
    Image.fromarray((truth * 255 + 0.5).byte().numpy()).save(folder / "quality_truth.png")
    Image.fromarray((disocc.float() * 255).byte().numpy()).save(folder / "quality_disoccluded.png")
    Image.fromarray((image * 255 + 0.5).byte().numpy()).save(folder / "quality_input.png")


def _strict_json(value):
    """``value`` with every NaN/inf float (the PSNR and SSIM of a region with no pixels) replaced by ``None``: the
    output is standard JSON (``null``), which JSON readers other than Python's accept."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--first-scene", type=int, default=0,
                    help="seed of the first scene (scenes first..first+N-1): e.g. 6 scores held-out scenes 6.. that "
                         "a change tuned on the default scenes 0-5 never saw")
    ap.add_argument("--size", type=int, default=384, help="image width (height = 2/3 of it)")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--cameras", default="auto,pan-right,zoom-in")
    ap.add_argument("--fills", default="far-side,patchmatch+plate,patchmatch")
    ap.add_argument("--plates", default="truth,patchmatch",
                    help="background plates given to the renderer: truth (exact), patchmatch (as the pipeline), "
                         "planar-truth (oracle: exact on the wall and the ground, PatchMatch on the mid-ground cards)")
    ap.add_argument("--depth", choices=("exact", "estimator-like"), default="exact",
                    help="depth given to the renderer: exact (the scenes' true nearness) or estimator-like (as a "
                         "monocular estimator gives it: disparity blurred %(blur)s px so depth edges become ramps, "
                         "multiplicative noise %(noise)s smooth over %(noise_scale)s px, random scale/shift/tilt of "
                         "the disparity; deterministic per scene seed; the ground truth stays exact)" % ESTIMATOR_LIKE)
    ap.add_argument("--depth-blur", type=float, default=None, metavar="PX",
                    help="Gaussian sigma (px) of the disparity blur (overrides --depth's; 0 = none)")
    ap.add_argument("--depth-noise", type=float, default=None, metavar="SIGMA",
                    help="multiplicative disparity noise exp(SIGMA * n), 0 <= SIGMA < 0.5 (overrides --depth's)")
    ap.add_argument("--depth-noise-scale", type=float, default=None, metavar="PX",
                    help="Gaussian sigma (px) over which the depth noise is smooth, 0 < PX <= 64 (default 3)")
    ap.add_argument("--depth-affine", action=argparse.BooleanOptionalAction, default=None,
                    help="random scale in [0.5, 2], shift in [0.02, 0.15] and tilt (<= 0.04) of the disparity "
                         "(overrides --depth's)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(ap)
    ap.add_argument("--images", default=None, help="write input, truth and each fill's last frame of the first scene here")
    ap.add_argument("--quick", action="store_true", help="CI smoke run: 1 scene, 96 px, 3 frames, auto camera")
    args = ap.parse_args(argv)
    check_json(args)  # a file that may not be written fails now, not after the run
    if args.quick:
        args.scenes, args.size, args.frames, args.cameras = 1, 96, 3, "auto"
    if args.first_scene < 0:
        ap.error(f"--first-scene must be >= 0, got {args.first_scene}")
    try:
        check_depth_settings(**depth_settings(args))
    except ValueError as err:
        ap.error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = evaluate(args)
    result["settings"] = {k: v for k, v in vars(args).items() if k not in ("json", "images")}
    result["settings"]["depth_degradation"] = depth_settings(args)  # what --depth and its overrides came to
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                         "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result = _strict_json(result)
    print(json.dumps(result["summary"], indent=1, allow_nan=False))
    write_json(args, result, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
