"""What every depth estimator returns, and the input and output conventions they share (see
:mod:`cartoonseg.depth.estimator` for the models): :class:`DepthResult`, :func:`normalise`, :func:`as_uint8_rgb`."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from ..io import to_rgb_uint8

__all__ = ["DepthResult", "as_uint8_rgb", "normalise"]


@dataclasses.dataclass
class DepthResult:
    """Depth of one image at its own size (see the module docstring for the conventions).

    Attributes:
        disparity: float32 ``[H,W]`` in [0,1], larger = nearer.
        depth: float32 ``[H,W]`` in [0,1], larger = farther (``1 - disparity``).
        raw: float32 ``[H,W]``, the model's prediction (inverse relative depth, or metric depth for metric models).
    """

    disparity: Tensor
    depth: Tensor
    raw: Tensor


def normalise(x: Tensor) -> Tensor:
    """``x`` min-max scaled to [0,1]; all zeros where it is constant or not finite."""
    lo, hi = float(x.min()), float(x.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return torch.zeros_like(x)
    return ((x - lo) / (hi - lo)).clamp(0, 1)


def as_uint8_rgb(image) -> np.ndarray:
    """The input image by the policy of :func:`cartoonseg.io.to_rgb_uint8` (NaN -> 0), at least 2x2."""
    arr = to_rgb_uint8(image, nan="zero")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"image too small for depth estimation: {arr.shape[:2]} (need at least 2x2)")
    return arr
