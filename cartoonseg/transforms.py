"""Resizing (one home for every resize helper) and the two stages' pre-processing: the detector's letterbox and
the refiner's canvas.

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

__all__ = [
    "MAX_PIXELS",
    "Letterbox",
    "check_same_aspect",
    "grey_rgb",
    "letterbox",
    "refine_canvas",
    "resize_center_crop",
    "resize_float",
    "resize_image",
    "resize_mask",
    "resize_uint8",
    "to_rgb_uint8",
]


def grey_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H,W,3]`` -> its luma replicated on 3 channels (uint8 ``[H,W,3]``): the reference's
    ``infer_grey`` (``cv2.cvtColor(BGR2GRAY)`` then back to 3 channels), for manga pages and line art.

    OpenCV's conversion (Y = 0.299 R + 0.587 G + 0.114 B in fixed point) when OpenCV is importable, bit-exact with
    the reference; otherwise the same weights in 15-bit fixed point (within one level of any OpenCV version).
    Converting a grey image again returns it unchanged.
    """
    if cv2 is not None:
        y = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    else:
        c = rgb.astype(np.uint32)
        y = ((c[..., 0] * 9798 + c[..., 1] * 19235 + c[..., 2] * 3735 + (1 << 14)) >> 15).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(y[..., None], 3, axis=2))


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


def check_same_aspect(size_hw: tuple[int, int], image_hw: tuple[int, int], what: str = "background plate") -> None:
    """``ValueError`` unless a picture of ``size_hw`` = (height, width) that is resized to ``image_hw`` keeps its
    aspect ratio (within a pixel, or 1%): a plate or hint of another picture, or a crop, would be stretched over the
    image; another size of the same aspect is fine. The one check of every renderer that resizes a plate."""
    (ph, pw), (ih, iw) = (int(v) for v in size_hw), (int(v) for v in image_hw)
    if ph < 1 or pw < 1 or abs(ph * iw / pw - ih) > max(1.0, 0.01 * ih):
        raise ValueError(f"the {what} is {pw}x{ph} px but the image is {iw}x{ih}: another aspect ratio, it would be "
                         f"stretched; give the {what} made from this image (another size of the same aspect is fine)")


def resize_image(image: Tensor, hw: tuple[int, int]) -> Tensor:
    """Resize a float image ``[H,W,C]`` or ``[B,H,W,C]`` in [0,1] to ``hw`` = (height, width) (bicubic, antialiased
    when shrinking), clamped to [0,1]; the same size returns the input itself."""
    single = image.dim() == 3
    x = (image[None] if single else image).movedim(-1, 1)
    if tuple(x.shape[-2:]) != tuple(hw):
        shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
        dtype = x.dtype  # computed in float32 (antialiased shrinking has no half kernels on the CPU), returned as given
        x = F.interpolate(x.float(), size=hw, mode="bicubic", align_corners=False, antialias=shrink).clamp(0, 1)
        x = x.to(dtype)
    x = x.movedim(1, -1)
    return x[0] if single else x


def resize_center_crop(image: Tensor, hw: tuple[int, int]) -> Tensor:
    """:func:`resize_image` to ``hw`` after cropping the middle of the image to that aspect ratio (``[H,W,C]`` or
    ``[B,H,W,C]``): how ComfyUI's ControlNet fits a hint of another shape to the latent (``comfy.utils.
    common_upscale(..., "center")``, the same crop arithmetic), so a hint is never stretched."""
    ih, iw = image.shape[-3], image.shape[-2]
    th, tw = int(hw[0]), int(hw[1])
    old, new = iw / ih, tw / th
    x = round((iw - iw * (new / old)) / 2) if old > new else 0
    y = round((ih - ih * (old / new)) / 2) if old < new else 0
    return resize_image(image[..., y:ih - y, x:iw - x, :], (th, tw))


def resize_mask(mask: Tensor, hw: tuple[int, int]) -> Tensor:
    """Resize a soft mask ``[H,W]`` to ``hw`` = (height, width) (bilinear; area when shrinking both sides), clamped
    to [0,1]; the same size returns the input itself."""
    if tuple(mask.shape[-2:]) == tuple(hw):
        return mask
    shrink = hw[0] < mask.shape[-2] and hw[1] < mask.shape[-1]
    mode = "area" if shrink else "bilinear"
    kwargs = {} if shrink else {"align_corners": False}
    return F.interpolate(mask[None, None].float(), size=hw, mode=mode, **kwargs)[0, 0].clamp(0, 1)


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
