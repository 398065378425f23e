"""Built-in ControlNet hint extractors (lineart and Canny edges) in plain PyTorch.

Paper §6.2 keeps the structure of each restyled instance with a *lineart* ControlNet (SD1.5
``control_v11p_sd15s2_lineart_anime``); the authors' SDXL variant (``run_style.py``) uses a *canny* ControlNet
(``diffusers_xl_canny_mid``). Both ControlNets take a hint image with **white lines on a black background**.
The real preprocessors live in other packs (controlnet_aux ``AnimeLineArtPreprocessor``, core ``Canny``); these
are the fallbacks used when no hint image is supplied, so the pipeline works with no extra pack installed:

* :func:`lineart`: ink extraction by a local-contrast rule (a pixel is ink by how much darker it is than a
  Gaussian-blurred neighbourhood), the classic "sketch from a cartoon" operator. It is not the learned
  lineart-anime network, only a deterministic approximation with the same polarity and value range.
* :func:`canny`: Canny edges (Gaussian smoothing, Sobel gradients, non-maximum suppression on four quantised
  directions, double threshold and hysteresis by iterated 8-neighbour dilation), thresholds in [0,1] units of the
  gradient magnitude of a [0,1] grey image (OpenCV's 100/200 on 0..255 are about 0.1/0.2 here after smoothing).

All functions take ``image`` as float ``[H,W,3]`` or ``[B,H,W,3]`` RGB in [0,1] (ComfyUI IMAGE layout) and return
the same leading shape with 3 identical channels, values in [0,1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import to_float_rgb

__all__ = ["HINT_TYPES", "canny", "extract_hint", "gaussian_blur", "lineart"]

HINT_TYPES: tuple[str, ...] = ("lineart", "canny")


def _as_batch(image: Tensor) -> tuple[Tensor, bool]:
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor [H,W,3] or [B,H,W,3], got {type(image).__name__}")
    single = image.dim() == 3
    if single:
        image = image[None]
    if image.dim() != 4 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"image must be [H,W,3] or [B,H,W,3] RGB, got shape {tuple(image.shape)}")
    return to_float_rgb(image), single  # uint8 0..255, grey expanded, alpha dropped, NaN -> 0


def _grey(image: Tensor) -> Tensor:
    """[B,H,W,3] -> [B,1,H,W] luma (BT.601)."""
    w = image.new_tensor([0.299, 0.587, 0.114])
    return (image * w).sum(-1)[:, None]


def _finish(grey: Tensor, single: bool) -> Tensor:
    out = grey[:, 0, :, :, None].expand(-1, -1, -1, 3).clamp(0, 1).contiguous()
    return out[0] if single else out


def gaussian_blur(x: Tensor, sigma: float, truncate: float = 2.0) -> Tensor:
    """Separable Gaussian blur of ``x [B,C,H,W]`` with standard deviation ``sigma`` px, window radius
    ``ceil(truncate*sigma)`` (so the support of the result grows by exactly that radius), replicate padding.
    ``sigma <= 0`` returns ``x`` unchanged."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(truncate * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad_mode = "replicate" if min(x.shape[-2:]) > 1 else "constant"
    x = F.pad(x, (radius, radius, 0, 0), mode=pad_mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode=pad_mode)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def lineart(image: Tensor, *, sigma: float = 1.5, gain: float = 8.0, threshold: float = 0.02) -> Tensor:
    """White-on-black line drawing of a cartoon image.

    Args:
        image: float ``[H,W,3]`` or ``[B,H,W,3]`` RGB in [0,1].
        sigma: neighbourhood scale in px (lines thinner than ~2*sigma are picked up).
        gain: contrast gain applied to "darker than the neighbourhood" (0.1 darker -> 0.8 line).
        threshold: local darkness below this is treated as flat colour (removes shading noise).

    Returns:
        float, same leading shape as ``image`` with 3 equal channels, lines near 1 on a 0 background.
    """
    image, single = _as_batch(image)
    g = _grey(image)
    dark = (gaussian_blur(g, sigma) - g - threshold).clamp_min(0)
    return _finish((dark * gain).clamp(0, 1), single)


def canny(image: Tensor, *, low: float = 0.1, high: float = 0.2, sigma: float = 1.0) -> Tensor:
    """Binary Canny edges (white on black).

    Args:
        image: float ``[H,W,3]`` or ``[B,H,W,3]`` RGB in [0,1].
        low, high: hysteresis thresholds on the Sobel magnitude (per-pixel units of the [0,1] grey image,
            Sobel kernel normalised to sum |w| = 8 as in OpenCV, divided by 4); ``0 <= low <= high``.
        sigma: Gaussian pre-smoothing in px.

    Returns:
        float {0,1}, same leading shape as ``image`` with 3 equal channels.
    """
    if not 0 <= low <= high:
        raise ValueError(f"canny thresholds must satisfy 0 <= low <= high, got low={low}, high={high}")
    image, single = _as_batch(image)
    g = gaussian_blur(_grey(image), sigma)
    kx = g.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
    gp = F.pad(g, (1, 1, 1, 1), mode="replicate") if min(g.shape[-2:]) > 1 else F.pad(g, (1, 1, 1, 1))
    gx = F.conv2d(gp, kx.view(1, 1, 3, 3))
    gy = F.conv2d(gp, kx.t().contiguous().view(1, 1, 3, 3))
    mag = torch.hypot(gx, gy)
    # Non-maximum suppression along the gradient direction quantised to 0/45/90/135 degrees.
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    sector = torch.bucketize(angle, angle.new_tensor([22.5, 67.5, 112.5, 157.5])) % 4
    mp = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[-2:]

    def shifted(dy: int, dx: int) -> Tensor:
        return mp[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    # image y grows downwards; gradient direction (gx, gy) in pixel axes
    offsets = [((0, 1), (0, -1)), ((1, 1), (-1, -1)), ((1, 0), (-1, 0)), ((1, -1), (-1, 1))]
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for s, ((ay, ax), (by, bx)) in enumerate(offsets):
        local_max = (mag >= shifted(ay, ax)) & (mag >= shifted(by, bx))
        keep |= (sector == s) & local_max
    thin = torch.where(keep, mag, torch.zeros_like(mag))
    strong = thin >= high
    weak = thin >= low
    edges = strong
    # Hysteresis: grow strong edges through connected weak pixels until stable.
    for _ in range(max(h, w)):
        grown = (F.max_pool2d(edges.float(), 3, stride=1, padding=1) > 0) & weak
        if torch.equal(grown, edges):
            break
        edges = grown
    return _finish(edges.float(), single)


def extract_hint(image: Tensor, kind: str) -> Tensor:
    """Dispatch to :func:`lineart` or :func:`canny` with their defaults (``kind`` in :data:`HINT_TYPES`)."""
    if kind == "lineart":
        return lineart(image)
    if kind == "canny":
        return canny(image)
    raise ValueError(f"unknown hint type {kind!r}; allowed: {', '.join(HINT_TYPES)}")
