"""Depth of field for the 3D Ken Burns effect: a rack focus to the nearest character, rendered as a
hexagonal-aperture gather blur in a "lightness" space, in plain PyTorch.

Follows the effect described in CartoonSegmentation (arXiv 2312.01943, §6.1, its released 3D Ken Burns
configuration): the focal plane moves to the nearest character from the far end (from the near end when that
character stands in the farther half of the depth range, see :func:`focus_schedule`) with a logistic ramp centred at
mid-clip (``dof_speed`` 50), the blur of a pixel grows with its distance from the focal plane, and highlights bloom
because the blur averages ``image ** 13``. The hexagonal aperture is built from three directional 1-D gathers
(one vertical pass, then two passes at +-60 degrees from it whose results are averaged), the construction of
McIntosh et al., "Efficiently Simulating the Bokeh of Polygonal Apertures in a Post-Process Depth of Field Shader"
(2012). Independent implementation with ``grid_sample``; batched over frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bokeh_blur", "focus_schedule", "max_blur_radius"]

# Blur radius (pixels) at strength 1 for a pixel at the far end while focus is on the nearest one, as a fraction
# of the short image side (the original reaches about 8 px at 1024 px).
RADIUS_FRACTION = 0.008


def max_blur_radius(size: tuple[int, int], strength: float) -> float:
    """Largest blur radius in pixels for frames of ``size`` ``(H, W)`` at ``strength``."""
    return float(strength) * RADIUS_FRACTION * min(size)


def focus_schedule(times: Tensor, focus_end: float, speed: float) -> Tensor:
    """Focal plane (as nearness in [0, 1], 1 = nearest) over the clip: from the end of the range farther from
    ``focus_end`` to ``focus_end``, along a logistic ramp ``sigmoid((t - 0.5) * speed)``.

    Args:
        times: ``[T]`` clip times in [0, 1].
        focus_end: nearness of the subject that ends in focus.
        speed: steepness of the ramp (the original: 50; 0 keeps focus half way).
    """
    start = 0.0 if focus_end >= 0.5 else 1.0
    return start + (focus_end - start) * torch.sigmoid((times.float() - 0.5) * float(speed))


def _directional_gather(values: Tensor, radius: Tensor, angle: float, taps: int, r_max: float) -> Tensor:
    """One 1-D gather pass: every pixel averages ``taps`` samples spread over ``[-r, r]`` along ``angle``
    (radians, image coordinates: x right, y down), each weighted by the sample's own blur radius (so sharp pixels do
    not smear over blurred ones).

    Args:
        values: ``[T,C,H,W]``.
        radius: ``[T,1,H,W]`` blur radius in pixels.
    """
    t, c, h, w = values.shape
    device, dtype = values.device, values.dtype
    ys = torch.arange(h, device=device, dtype=dtype).view(1, h, 1).expand(t, h, w)
    xs = torch.arange(w, device=device, dtype=dtype).view(1, 1, w).expand(t, h, w)
    dx, dy = math.cos(angle), math.sin(angle)
    r = radius[:, 0]
    both = torch.cat([values, radius], 1)
    acc = torch.zeros_like(values)
    norm = torch.zeros_like(radius)
    for k in range(taps):
        offset = (2.0 * (k + 0.5) / taps - 1.0) * r
        gx = (xs + offset * dx) * (2.0 / max(w - 1, 1)) - 1.0
        gy = (ys + offset * dy) * (2.0 / max(h - 1, 1)) - 1.0
        sample = F.grid_sample(both, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border", align_corners=True)
        # a tap within half a pixel of its pixel's centre reads that pixel exactly: the grid's rounding must not
        # leak a bright neighbour into an in-focus dark one (in image ** gamma, 1e-6 of white outweighs a dark line)
        sample = torch.where((offset.abs() < 0.5)[:, None], both, sample)
        wgt = sample[:, c:] / max(r_max, 1e-6) + 1e-3
        acc = acc + wgt * sample[:, :c]
        norm = norm + wgt
    return acc / norm


def bokeh_blur(
    frames: Tensor,
    nearness: Tensor,
    focus: Tensor,
    *,
    strength: float = 1.0,
    gamma: float = 13.0,
    taps: int = 16,
) -> Tensor:
    """Defocus ``frames`` around a per-frame focal plane.

    Args:
        frames: ``[T,3,H,W]`` RGB in [0, 1].
        nearness: ``[T,1,H,W]`` scene nearness in [0, 1] (1 = nearest) of every rendered pixel.
        focus: ``[T]`` focal plane nearness per frame (see :func:`focus_schedule`).
        strength: scales the blur radius (see :func:`max_blur_radius`); 0 returns the input.
        gamma: lightness exponent: the blur averages ``frames ** gamma`` (the original: 13; 1 = plain linear blur).
        taps: samples per 1-D pass.

    Returns:
        ``[T,3,H,W]`` blurred frames in [0, 1].
    """
    if frames.dim() != 4 or nearness.shape != (frames.shape[0], 1, *frames.shape[2:]) or focus.shape != frames.shape[:1]:
        raise ValueError(
            f"bokeh_blur needs frames [T,3,H,W], nearness [T,1,H,W] and focus [T]; got {tuple(frames.shape)}, "
            f"{tuple(nearness.shape)}, {tuple(focus.shape)}"
        )
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    r_max = max_blur_radius(tuple(frames.shape[-2:]), strength)
    if r_max <= 0.0 or taps < 1:
        return frames
    radius = (nearness - focus.view(-1, 1, 1, 1).to(nearness)).abs().clamp(0.0, 1.0) * r_max
    light = frames.clamp(0.0, 1.0) ** gamma
    vertical = _directional_gather(light, radius, math.pi / 2.0, taps, r_max)
    left = _directional_gather(vertical, radius, math.pi / 2.0 + 2.0 * math.pi / 3.0, taps, r_max)
    right = _directional_gather(vertical, radius, math.pi / 2.0 - 2.0 * math.pi / 3.0, taps, r_max)
    out = (0.5 * (left + right)).clamp_min(0.0) ** (1.0 / gamma)
    # a pixel whose taps all stay within half a pixel reads only itself: keep it exactly (image ** 13 and back
    # would round dark values off)
    return torch.where(radius < 0.5, frames, out)
