"""ZoeDepth (Bhat et al. 2023, "ZoeDepth: Zero-shot Transfer by Combining Relative and Metric Depth") through
``transformers``: ``ZoeDepthForDepthEstimation`` and the published ``ZoeDepthImageProcessor`` settings.

The original Ken Burns code offered ZoeDepth (ZoeD_M12_N, flip test-time augmentation, padded input) and turned its
metric depth into disparity. Here the processor from the model folder resizes (keep aspect ratio, multiple of 32),
pads by the ZoeDepth rule (``int(sqrt(side / 2) * 3)`` reflected pixels per side), rescales and normalises; the model
runs on the image and on its mirror image, and the two predictions are averaged (flip TTA). The padding removal and
resize back follow ``ZoeDepthImageProcessor.post_process_depth_estimation`` in plain torch (its PIL backend needs
torchvision for that step, which this package does not depend on).

Output: :class:`~cartoonseg.depth.result.DepthResult` at the image size: ``raw`` metric depth (metres, larger =
farther), ``disparity`` = ``1 / raw`` min-max normalised (larger = nearer).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..device import precision_of, resolve_dtype
from .result import DepthResult, as_uint8_rgb, normalise

__all__ = ["ZoeDepthEstimator", "load_zoedepth"]

# the ZoeDepth padding factor of the published processor (pixels = int(sqrt(side / 2) * 3))
PADDING_FACTOR = 3


class ZoeDepthEstimator:
    """A ``ZoeDepthForDepthEstimation`` with its image processor. Call it on one RGB image.

    Args:
        model: the model, in eval mode.
        processor: its ``ZoeDepthImageProcessor`` (from the same folder).
        flip: average the prediction with that of the mirrored image (the original's test-time augmentation).
        dtype: compute dtype (float32; bfloat16/float16 where :mod:`cartoonseg.device` allows them).
    """

    def __init__(self, model: torch.nn.Module, processor, *, flip: bool = True, dtype: torch.dtype = torch.float32) -> None:
        self.model = model.eval()
        self.processor = processor
        self.flip = bool(flip)
        self.dtype = dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> ZoeDepthEstimator:
        self.model.to(device)
        return self

    def _forward(self, x: Tensor) -> Tensor:
        if self.device.type == "cpu":
            cpu_dtype = resolve_dtype(precision_of(self.dtype), "cpu")
            if cpu_dtype != torch.float32:
                with torch.autocast("cpu", dtype=cpu_dtype):
                    return self.model(pixel_values=x).predicted_depth.float()
            return self.model(pixel_values=x).predicted_depth.float()
        return self.model(pixel_values=x.to(self.dtype)).predicted_depth.float()

    @torch.inference_mode()
    def __call__(self, image) -> DepthResult:
        rgb = as_uint8_rgb(image)
        height, width = rgb.shape[:2]
        try:  # channels_last: a 3-pixel-high image is not channels-first
            x = self.processor(images=rgb, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
        except RuntimeError as exc:
            if "sizes should be greater than 0" not in str(exc):
                raise
            raise ValueError(f"image of {width}x{height} px is too elongated for ZoeDepth (its resize leaves a side of "
                             "0 px); crop it or use Depth Anything V2") from None
        x = x.to(self.device)
        pred = self._forward(x)
        if self.flip:
            pred = 0.5 * (pred + torch.flip(self._forward(torch.flip(x, dims=[-1])), dims=[-1]))
        raw = _remove_padding(pred, (height, width), bool(getattr(self.processor, "do_pad", True))).cpu()
        raw = torch.nan_to_num(raw, nan=0.0).clamp_min(0.0)
        disparity = normalise(1.0 / raw.clamp_min(1e-6))
        return DepthResult(disparity=disparity, depth=1.0 - disparity, raw=raw)


def _remove_padding(pred: Tensor, size: tuple[int, int], padded: bool) -> Tensor:
    """``[1,h,w]`` prediction of a padded input -> ``[H,W]`` at the image size (the processor's post-processing:
    resize to the padded image size, crop the padding)."""
    height, width = size
    pad_h = int(np.sqrt(height / 2) * PADDING_FACTOR) if padded else 0
    pad_w = int(np.sqrt(width / 2) * PADDING_FACTOR) if padded else 0
    depth = F.interpolate(pred[:, None].float(), size=(height + 2 * pad_h, width + 2 * pad_w), mode="bicubic",
                          align_corners=False)[0, 0]
    return depth[pad_h : pad_h + height, pad_w : pad_w + width]


def _transformers():
    from .._optional import require

    return require("transformers", extra="depth", purpose="depth estimation (ZoeDepth)")


def load_zoedepth(folder: str | os.PathLike, *, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32, flip: bool = True) -> ZoeDepthEstimator:
    """A :class:`ZoeDepthEstimator` from a local ``transformers`` folder (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json``); never touches the network. ``dtype`` is expected resolved (see
    :func:`cartoonseg.depth.load_depth_model`)."""
    transformers = _transformers()
    folder = Path(folder)
    model = transformers.ZoeDepthForDepthEstimation.from_pretrained(folder, local_files_only=True).eval()
    processor = _processor(folder)
    if dtype != torch.float32 and torch.device(device).type != "cpu":
        model.to(dtype)
    model.to(device)
    return ZoeDepthEstimator(model, processor, flip=flip, dtype=dtype)


def _processor(folder: Path):
    """The folder's ZoeDepth image processor, on the numpy/PIL backend (no torchvision needed)."""
    transformers = _transformers()
    if not (folder / "preprocessor_config.json").is_file():
        raise ValueError(f"{folder} has no preprocessor_config.json (ZoeDepth needs its processor settings)")
    for name in ("ZoeDepthImageProcessorPil", "ZoeDepthImageProcessor"):  # transformers 5 names the PIL one apart
        cls = getattr(transformers, name, None)
        if cls is not None:
            try:
                return cls.from_pretrained(folder, local_files_only=True)
            except ImportError:  # a backend that needs torchvision
                continue
    raise RuntimeError("this transformers version has no ZoeDepth image processor (transformers >= 4.41 needed)")
