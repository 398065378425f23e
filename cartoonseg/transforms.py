"""The two stages' pre-processing: resizing, the detector's letterbox and the refiner's canvas.

Channel order: the public API takes **RGB** (numpy uint8 ``[H,W,3]``, torch uint8 ``[H,W,3]`` or a float tensor
``[H,W,3]`` in [0,1], the ComfyUI frame layout). Both networks of the paper were trained on OpenCV-read **BGR**
images, so the conversion to BGR happens here, once. Validation and conversion of input images (NaN, alpha, grey,
range) is :func:`cartoonseg.io.to_rgb_uint8`, re-exported here.

Resizing uses OpenCV's ``INTER_LINEAR`` when OpenCV is importable (bit-exact with the reference pipeline, which
resizes uint8 images with cv2); otherwise a pure-torch bilinear resize whose uint8 output differs from OpenCV's
fixed-point arithmetic by at most a few levels on a few pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import MAX_PIXELS, to_rgb_uint8  # re-exported: the image policy lives in cartoonseg.io

try:  # optional: exact parity with the reference resize
    import cv2
except ImportError:  # pragma: no cover - exercised by tests that hide cv2
    cv2 = None

__all__ = ["to_rgb_uint8", "resize_uint8", "resize_float", "letterbox", "Letterbox", "refine_canvas", "MAX_PIXELS"]


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 ``[H,W,C]`` image to ``size`` = (width, height) (OpenCV INTER_LINEAR)."""
    w, h = int(size[0]), int(size[1])
    if image.shape[1] == w and image.shape[0] == h:
        return image
    if cv2 is not None:
        out = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        return out[:, :, None] if out.ndim == 2 else out
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def resize_float(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (half-pixel centres, no antialias: OpenCV INTER_LINEAR on floats) of ``[..., H, W]`` to
    ``size`` = (height, width)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    lead = image.shape[:-2]
    out = F.interpolate(image.reshape(1, -1, *image.shape[-2:]).float(), size=size, mode="bilinear",
                        align_corners=False)
    return out.reshape(*lead, *size)


@dataclass(frozen=True)
class Letterbox:
    """Geometry of the detector's letterbox (mmdet ``Resize(keep_ratio) + Pad``, bottom/right padding).

    Attributes:
        ori_shape: (h, w) of the original image.
        resized_shape: (h, w) after the resize.
        img_shape: (h, w) of the padded canvas (boxes are clamped to it, as mmdet does).
        scale_factor: (w_scale, h_scale) = resized / original.
    """

    ori_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    img_shape: tuple[int, int]
    scale_factor: tuple[float, float]


def letterbox(bgr: np.ndarray, size: int, pad_value: float = 114.0) -> tuple[Tensor, Letterbox]:
    """Resize (up or down) so the image fits ``size`` x ``size`` keeping its aspect ratio, then pad bottom/right.

    Args:
        bgr: uint8 ``[H,W,3]``.
        size: canvas side (multiple of 32).
        pad_value: fill value in pixel units.

    Returns:
        (canvas float32 ``[3,size,size]`` in raw 0..255 units, :class:`Letterbox`).
    """
    h, w = bgr.shape[:2]
    scale = min(size / h, size / w)
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    new_w, new_h = max(1, min(size, new_w)), max(1, min(size, new_h))
    resized = resize_uint8(bgr, (new_w, new_h))
    canvas = torch.full((3, size, size), float(pad_value), dtype=torch.float32)
    canvas[:, :new_h, :new_w] = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float()
    geom = Letterbox((h, w), (new_h, new_w), (size, size), (new_w / w, new_h / h))
    return canvas, geom


def refine_canvas(image_bgr: np.ndarray, size: int) -> tuple[Tensor, tuple[int, int]]:
    """The refiner's image canvas: scale **down** only so the long side fits ``size`` (short side
    ``max(1, round(short * size / long))``), pad bottom/right with 0, BGR / 255.

    Returns:
        (float32 ``[3,size,size]``, (h', w') of the image inside the canvas).
    """
    h, w = image_bgr.shape[:2]
    if max(h, w) > size:
        if h >= w:
            new_h, new_w = size, max(1, int(round(w * size / h)))
        else:
            new_h, new_w = max(1, int(round(h * size / w))), size
        image_bgr = resize_uint8(image_bgr, (new_w, new_h))
    h2, w2 = image_bgr.shape[:2]
    canvas = torch.zeros(3, size, size, dtype=torch.float32)
    canvas[:, :h2, :w2] = torch.from_numpy(np.ascontiguousarray(image_bgr)).permute(2, 0, 1).float() / 255.0
    return canvas, (h2, w2)
