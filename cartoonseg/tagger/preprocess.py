"""Image preprocessing of the WD (SmilingWolf) booru taggers, bit-exact with the reference scripts.

Recipe (SmilingWolf/wd-tagger Space ``prepare_image``, neggles/wdv3-timm):
alpha-composite on white -> pad to a centred square with white (floor offsets) -> Pillow ``BICUBIC`` resize to
the model side (skipped when already that size) -> RGB to **BGR**. The ONNX models take that as float 0..255
NHWC; the PyTorch/timm model takes ``(u8/255 - 0.5)/0.5`` NCHW, which :func:`to_model_input` produces.
Pillow is used for the resize on purpose: torch's antialiased bicubic differs by up to 13 levels.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..io import has_alpha, to_rgb_uint8

__all__ = ["to_pil", "prepare_image", "to_model_input", "preprocess"]

ImageLike = "Image.Image | np.ndarray | Tensor"


def to_pil(image) -> Image.Image:
    """Convert an image to a Pillow image in mode ``RGB`` or ``RGBA``.

    Args:
        image: a ``PIL.Image`` (any mode; palette/greyscale with transparency become RGBA), a numpy array or
            torch tensor ``[H,W]``, ``[H,W,1]``, ``[H,W,3]`` (RGB) or ``[H,W,4]`` (RGBA), either uint8 0..255 or
            float in [0,1] (one ComfyUI frame). NaNs count as 0.

    Raises:
        TypeError: unsupported type or dtype. ValueError: empty or wrongly shaped array.
    """
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image is empty: {image.width}x{image.height}")
        if image.mode in ("RGB", "RGBA"):
            return image
        return image.convert("RGBA" if has_alpha(image) else "RGB")
    if isinstance(image, Tensor) and image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"image tensor must be uint8 or float, got {image.dtype}")
    if isinstance(image, np.ndarray) and image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image array must be uint8 (0..255) or float (0..1), got {image.dtype}")
    if not isinstance(image, (Tensor, np.ndarray)):
        raise TypeError(f"image must be a PIL.Image, numpy array or torch tensor, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):  # the reference recipe's inputs; no grey + alpha
        raise ValueError(f"image must be [H,W], [H,W,1], [H,W,3] or [H,W,4], got shape {tuple(image.shape)}")
    array = to_rgb_uint8(image, nan="zero", alpha="keep")
    return Image.fromarray(array, "RGBA" if array.shape[2] == 4 else "RGB")


def prepare_image(image, size: int = 448) -> np.ndarray:
    """The reference preprocessing up to the ONNX input.

    Args:
        image: anything :func:`to_pil` accepts.
        size: model input side.

    Returns:
        uint8 numpy ``[size,size,3]`` in **BGR** order (cast to float32 for the ONNX model).
    """
    pil = to_pil(image)
    canvas = Image.new("RGBA", pil.size, (255, 255, 255))
    canvas.alpha_composite(pil.convert("RGBA"))
    rgb = canvas.convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.BICUBIC)
    return np.ascontiguousarray(np.asarray(square, dtype=np.uint8)[:, :, ::-1])


def to_model_input(bgr: np.ndarray | Tensor) -> Tensor:
    """uint8 BGR ``[H,W,3]`` or ``[B,H,W,3]`` -> float32 ``[B,3,H,W]`` = ``(u8/255 - 0.5)/0.5`` (timm's transform)."""
    x = torch.as_tensor(np.asarray(bgr)) if not isinstance(bgr, Tensor) else bgr
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 BGR pixels, got {x.dtype}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected [H,W,3] or [B,H,W,3] BGR pixels, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div(255.0)
    return x.sub(0.5).div(0.5).contiguous()


def preprocess(images, size: int = 448) -> Tensor:
    """One image or a list of images -> model batch float32 ``[B,3,size,size]`` (BGR, [-1,1])."""
    if not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise ValueError("preprocess needs at least one image")
    return to_model_input(np.stack([prepare_image(im, size) for im in images]))
