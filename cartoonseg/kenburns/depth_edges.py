"""Depth-edge refinement for the 3D Ken Burns renderer: a monocular depth estimator's disparity (Depth Anything V2
and the like) turns every depth edge into a ramp a few pixels wide. Unprojected, a ramp is a sheet of points
stretched between the near and the far surface, which a moved camera shows as a smeared skin where a hole should
open. The original 3D Ken Burns sharpens its depth at edges with a refinement network guided by the image; this is
its classical counterpart: where a small window's disparity is a ramp between two clearly different depths, every
pixel is snapped to the near or the far side, the one whose colour it shares (a joint, image-guided two-level fit).

A window is a ramp, and only then touched, when

* its disparity range is a clear depth step, at least ``jump`` of its nearest value (flat regions are left alone),
* and an affine function of the pixel coordinates does not explain it (its residual's standard deviation is at least
  ``nonplanar`` of the range): a plane is exactly affine in disparity (see :mod:`cartoonseg.kenburns.planes`), so a
  smooth slant (a ground, a floor) stays as it is, while a blurred step keeps a residual of about a fifth of its
  height (a threshold of 0.08 leaves a slant with a 3 % depth noise alone and still finds a step blurred 1.5 px),
  nor the depth's own wobble (3x the median window's relative residual: an estimator's noise on a ground),
* and it holds a ramp: pixels between its two sides (see below) that are steep, over at least :data:`RAMP_WIDTH`
  columns' worth. A pixel is steep when its slope (per axis the smaller of its two one-sided differences, so a pixel
  beside a sharp step keeps its own surface's slope) is at least :data:`STEEPER` times the slope of the surfaces on
  both sides, each the flattest point within a window's half-width along its slope: a blurred step is steeper than
  the surfaces it joins, while a slanted ground is as steep as the ground beside it. The flattest point, not the
  one a half-width away: a narrow gap between two near objects (a character beside a tree, 2-5 px of far wall) is
  blurred into a valley, and a half-width away lies the other object's ramp, as steep as this one, so such ramps,
  the skin a moved camera shows bridging the gap, were left as they were. An exact step is sharp (its anti-aliased
  rim is one pixel wide) and is left as it is; so is a slanted ground where it meets a far wall (a crease) or a
  character standing on it: its pixels lie between the window's two sides and an affine fit does not explain the
  window, but they are no ramp (counting them as one flattened a ground by up to 78 % of its nearness).

A depth that is not blurred at all is returned whole: one where fewer than a quarter of the step windows (those that
pass the first two tests) hold :data:`EDGE_BLUR` columns of ramp (0-3 % on the quality benchmark's exact depth,
where a steeply slanted narrow surface looks like a ramp; 35-75 % with a 1.5 px blur, the rest being creases and
slants, which hold no ramp, and windows that reach a ramp with their rim). The median window, which the gate used
before, falls under a column where a ground's creases outnumber the blurred steps.

Every pixel of such a window then takes the mean disparity of the window's near side (its pixels in the top quarter
of the range) or far side (the bottom quarter), the side whose nearest colour is nearer its own (the nearest, not the
mean colour: a side may be patterned); where both sides hold the colour as well (a depth edge with no colour edge)
the side its value is nearer to. Values only move within the window's range, so the refinement never invents a depth
that was not there; a side's slant or noise is flattened within a few pixels of a step only. (Snapping only the
ramp's middle half and leaving the sides' pixels as they were was measured too: on the quality benchmark's scenes with
a 1.5 px blur it removed 29 % of the relative depth error at the edges instead of 43 %.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["refine_depth_edges"]

#: Where the squared RGB distances to the two sides' nearest colours differ by less than this (about 0.03 per channel)
#: the image says nothing about which side a pixel is on, and its value decides.
_SAME_COLOUR = 3 * 0.03 ** 2
#: A side of a ramp's window: its pixels within this share of the range from the window's largest (near side) or
#: smallest (far side) value.
_BAND = 0.25
#: A ramp's window leaves an affine fit's residual (relative to its mean) at least this many times the median
#: window's: a slant with an estimator's noise is not a step.
NOISE_FACTOR = 3.0
#: Least width (px) of a ramp between the two sides for a window to be snapped: a sharp step is left as it is.
RAMP_WIDTH = 1.5
#: A ramp's pixel is at least this many times as steep as the surfaces on both sides of it (the flattest point within
#: a window's half-width along its slope): a pixel of a slanted surface is as steep as the surface beside it, a
#: blurred step is steeper than what it joins (a 1.5 px blur: 6x its slope 4 px away).
STEEPER = 2.0
#: The depth counts as blurred, and is refined at all, when at least :data:`BLURRED_SHARE` of its step windows hold
#: this many columns of ramp.
EDGE_BLUR = 1.0
BLURRED_SHARE = 0.25
#: Flagged pixels gathered at once (bounds the memory to about this many windows).
_CHUNK = 1 << 16


def _steep(v: Tensor, dist: int) -> Tensor:
    """``[H,W]`` bool: the pixels of ``v`` inside a ramp, those at least :data:`STEEPER` times as steep as both
    surfaces it joins: on either side, the flattest point of the path ``dist`` pixels long along the slope's direction.

    A pixel's slope is per axis the smaller of its two one-sided differences: a pixel beside a sharp step keeps its
    own surface's slope, only a pixel steep towards both neighbours (a ramp's, an anti-aliased rim's) is steep. Along
    the path the surface's slope is the central difference's component along the pixel's own direction, at its
    flattest: a slanted surface is as steep as its continuation (a ground where it meets a far wall is no ramp), a
    ramp reaches its plateau, and a ramp into a narrow gap (between two near objects, which a blur fills with a
    valley) reaches the valley's floor, where the slope turns (clamped at 0), not the other object's ramp beyond it;
    a sharp step has no steep pixel besides its one-pixel rim."""
    h, w = v.shape
    p = F.pad(v[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    fx, bx = p[1:-1, 2:] - v, v - p[1:-1, :-2]
    fy, by = p[2:, 1:-1] - v, v - p[:-2, 1:-1]
    sx = torch.where(fx.abs() < bx.abs(), fx, bx)
    sy = torch.where(fy.abs() < by.abs(), fy, by)
    slope = torch.hypot(sx, sy)
    # the slope's direction from central differences (a ramp's one-sided differences agree in sign)
    gx, gy = 0.5 * (fx + bx), 0.5 * (fy + by)
    norm = torch.hypot(gx, gy).clamp_min(1e-12)
    ux, uy = gx / norm, gy / norm
    ys = torch.arange(h, device=v.device)[:, None].expand(h, w)
    xs = torch.arange(w, device=v.device)[None, :].expand(h, w)
    gxf, gyf = gx.flatten(), gy.flatten()
    around = torch.zeros_like(v)
    for sign in (1.0, -1.0):
        flattest = None
        for t in range(1, dist + 1):
            at = ((ys + torch.round(sign * t * uy).long()).clamp(0, h - 1) * w
                  + (xs + torch.round(sign * t * ux).long()).clamp(0, w - 1))
            along = gxf[at] * ux + gyf[at] * uy
            flattest = along if flattest is None else torch.minimum(flattest, along)
        around = torch.maximum(around, flattest)  # clamped at 0: a path through a valley reaches a flat floor
    return slope > STEEPER * around


def refine_depth_edges(near: Tensor, rgb: Tensor, *, radius: int = 4, jump: float = 0.2,
                       nonplanar: float = 0.08) -> Tensor:
    """Snap the ramps of a disparity map at depth edges to their near or far side, guided by the image.

    Args:
        near: ``[H,W]`` nearness (disparity, larger = nearer, > 0).
        rgb: ``[3,H,W]`` image in [0,1], the same size.
        radius: half-width of the window, in pixels (4: a 9x9 window, enough for an estimator's 1-2 px edge blur).
        jump: least disparity range of a window, relative to its largest value, that is a depth step.
        nonplanar: least residual standard deviation of the window's affine fit, relative to its range, that is not
            a plane.

    Returns:
        ``[H,W]`` refined nearness (a new tensor; ``near`` is not changed).
    """
    if near.dim() != 2 or rgb.dim() != 3 or rgb.shape[0] != 3 or rgb.shape[1:] != near.shape:
        raise ValueError(f"refine_depth_edges: near must be [H,W] and rgb [3,H,W] of the same size, got "
                         f"{tuple(near.shape)} and {tuple(rgb.shape)}")
    if not 1 <= radius <= 32:
        raise ValueError(f"refine_depth_edges: radius must lie in [1, 32], got {radius}")
    if not (0.0 < jump < 1.0 and 0.0 < nonplanar < 1.0):
        raise ValueError(f"refine_depth_edges: jump and nonplanar must lie in (0, 1), got {jump} and {nonplanar}")
    h, w = near.shape
    out = near.clone()
    radius = min(radius, h - 1, w - 1)  # a window within a tiny image (reflection needs a pixel beyond the centre)
    if radius < 1:
        return out
    k = 2 * radius + 1
    v = near.float()[None, None]
    # the range and the sides from the window's pixels inside the image (a replicated border value is one of them)
    pad = F.pad(v, (radius,) * 4, mode="replicate")
    # the affine fit over an odd reflection at the border (2 v(edge) - v(mirror)), which continues an affine function
    # exactly, so a slant that meets the image's border is still a plane there
    odd = 2.0 * pad - F.pad(v, (radius,) * 4, mode="reflect")
    hi = F.max_pool2d(pad, k, stride=1)[0, 0]
    lo = -F.max_pool2d(-pad, k, stride=1)[0, 0]
    rng = hi - lo
    # affine fit over the window: the offsets are symmetric, so the mean and the two slopes decouple
    d = torch.arange(-radius, radius + 1, dtype=torch.float32, device=near.device)
    n = float(k * k)
    sxx = float(k * (d ** 2).sum())
    kernels = torch.stack([torch.ones(k, k, device=near.device), d[None, :].expand(k, k), d[:, None].expand(k, k)])
    sums = F.conv2d(odd, kernels[:, None])[0]  # [3,H,W]: sum v, sum v dx, sum v dy
    sq = F.conv2d(odd * odd, kernels[:1, None])[0, 0]
    rss = sq - sums[0] ** 2 / n - (sums[1] ** 2 + sums[2] ** 2) / sxx
    resid = rss.clamp_min(0.0).div(n).sqrt()
    # the depth's own wobble (an estimator's noise): the median window's residual relative to its mean, since most
    # windows lie within one smooth surface; a step must stand out of it too (0 on exact depth)
    rel = resid / (sums[0] / n).abs().clamp_min(1e-12)
    wobble = float(rel.median())
    ramp = (rng > jump * hi) & (resid > nonplanar * rng) & (rel > NOISE_FACTOR * wobble)
    idx = ramp.flatten().nonzero()[:, 0]
    if idx.numel() == 0:
        return out
    # the window's pixels of every flagged pixel, gathered from the padded maps
    vals_p = pad[0, 0]
    rgb_p = F.pad(rgb.float()[None], (radius,) * 4, mode="replicate")[0]  # [3,H+2r,W+2r]
    wp = w + 2 * radius
    offs = (d.long()[:, None] * wp + d.long()[None, :]).flatten()  # [K] flat offsets in the padded map
    flat_v = vals_p.flatten()
    flat_c = rgb_p.flatten(1)  # [3,(H+2r)(W+2r)]
    flat_steep = F.pad(_steep(near.float(), radius)[None, None].float(), (radius,) * 4,
                       mode="replicate")[0, 0].flatten().bool()
    result = out.flatten().float().clone()
    own_c = rgb.float().flatten(1)

    def window(i: Tensor):
        """The window values ``[N,K]``, their flat positions, and its lowest / highest value and range ``[N,1]``."""
        centre = (i // w + radius) * wp + (i % w + radius)
        at = centre[:, None] + offs[None, :]  # [N,K]
        low, top = lo.flatten()[i, None], hi.flatten()[i, None]
        return flat_v[at], centre, at, low, top, top - low

    def ramp_columns(vals: Tensor, at: Tensor, low: Tensor, top: Tensor, span: Tensor) -> Tensor:
        """Per window, its ramp in columns' worth: its pixels between the two sides that are steep ones."""
        between = (vals > low + _BAND * span) & (vals < top - _BAND * span)
        return (between & flat_steep[at]).sum(1).float() / k

    # is the depth blurred at all? Do a quarter of the step windows hold a column of ramp: 0-3 % of them on an exact
    # (or drawn) depth, whose steps are sharp, 35-75 % with a 1.5 px blur (the rest are a crease, a slant, a window
    # that reaches a ramp with its rim); a sharp depth is left whole
    widths = []
    for start in range(0, idx.numel(), _CHUNK):
        vals, _, at, low, top, span = window(idx[start:start + _CHUNK])
        widths.append(ramp_columns(vals, at, low, top, span))
    if float((torch.cat(widths) >= EDGE_BLUR).float().mean()) < BLURRED_SHARE:
        return out
    for start in range(0, idx.numel(), _CHUNK):
        i = idx[start:start + _CHUNK]
        vals, centre, at, low, top, span = window(i)
        cols = flat_c[:, at]  # [3,N,K]
        near_side = (vals >= top - _BAND * span).float()
        far_side = (vals <= low + _BAND * span).float()
        cn, cf = near_side.sum(1), far_side.sum(1)  # both >= 1 (the max and the min)
        vn, vf = (vals * near_side).sum(1) / cn, (vals * far_side).sum(1) / cf
        c = own_c[:, i]
        # the colour distance to the nearest colour of each side (a side may be patterned: a mean colour is none of
        # its colours)
        dist = ((cols - c[:, :, None]) ** 2).sum(0)  # [N,K]
        big = torch.finfo(dist.dtype).max
        dn = torch.where(near_side > 0, dist, big).amin(1)
        df = torch.where(far_side > 0, dist, big).amin(1)
        v0 = flat_v[centre]
        by_colour = (dn - df).abs() > _SAME_COLOUR
        pick_near = torch.where(by_colour, dn < df, v0 >= 0.5 * (vn + vf))
        # a ramp only where the window holds one: steep pixels between the two sides over at least RAMP_WIDTH
        # columns' worth (an estimator's blur spreads a step over 2 or more; an exact, anti-aliased step holds 1 at
        # most; a slanted surface none)
        is_ramp = ramp_columns(vals, at, low, top, span) >= RAMP_WIDTH
        result[i] = torch.where(is_ramp, torch.where(pick_near, vn, vf), v0)
    return result.view(h, w).to(near.dtype)
