"""Marigold (Ke et al., CVPR 2024, "Repurposing Diffusion-Based Image Generators for Monocular Depth Estimation")
through ``diffusers``' ``MarigoldDepthPipeline``.

The original Ken Burns code offered Marigold (``prs-eth/marigold-lcm-v1-0``: 4 denoising steps, an ensemble of 5,
processing resolution 768, seed 0) and used ``(1 - depth)`` as disparity. Marigold predicts affine-invariant depth
in [0,1] (0 = nearest), so here ``disparity = 1 - depth``, min-max normalised. ``diffusers`` is the optional extra
``diffusion`` (``pip install 'cartoonseg[diffusion]'``).
"""

from __future__ import annotations

import contextlib
import numbers
import os
from pathlib import Path

import torch
from torch import Tensor

from .._diffusers import dtype_argument, follow_hub_progress_setting
from ..config import MAX_CANVAS
from ..device import precision_of, refuse_cpu_fp16, resolve_dtype
from .result import DepthResult, as_uint8_rgb, normalise

__all__ = ["MARIGOLD_LIMITS", "MarigoldEstimator", "check_marigold_settings", "load_marigold"]

#: Allowed ranges of Marigold's sampling settings (``0`` steps / processing resolution = the checkpoint's default).
MARIGOLD_LIMITS: dict[str, tuple[int, int]] = {
    "steps": (0, 1000), "ensemble": (1, 64), "processing_resolution": (0, MAX_CANVAS),
}


def check_marigold_settings(**settings) -> None:
    """ValueError naming the first of ``steps``, ``ensemble``, ``processing_resolution`` (None = default, skipped)
    outside :data:`MARIGOLD_LIMITS`; called before any model is loaded."""
    for name, value in settings.items():
        lo, hi = MARIGOLD_LIMITS[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
            raise ValueError(f"Marigold {name} must be an integer in [{lo}, {hi}], got {value!r}")


class MarigoldEstimator:
    """A ``MarigoldDepthPipeline`` with fixed sampling settings. Call it on one RGB image.

    Args:
        pipe: the pipeline.
        steps: denoising steps, 0..1000 (0 = the checkpoint's default).
        ensemble: predictions averaged per image, 1..64 (the original: 5 for the LCM model).
        processing_resolution: long side the pipeline works at, 0..8192 (0 = the checkpoint's default).
        seed: noise seed (the same seed reproduces the result).
        dtype: the compute dtype (the pipeline's weights' on a GPU; on CPU the weights stay fp32 and bf16 is
            autocast).
    """

    def __init__(self, pipe, *, steps: int = 0, ensemble: int = 1, processing_resolution: int = 0, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> None:
        check_marigold_settings(steps=steps, ensemble=ensemble, processing_resolution=processing_resolution)
        self.pipe = pipe
        self.steps, self.ensemble = int(steps), int(ensemble)
        self.processing_resolution, self.seed, self.dtype = int(processing_resolution), int(seed), dtype
        # every weight of the pipeline, as one module (device moves, ComfyUI's model management)
        self.model = torch.nn.ModuleDict({name: getattr(pipe, name) for name in ("unet", "vae", "text_encoder")
                                          if isinstance(getattr(pipe, name, None), torch.nn.Module)})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> MarigoldEstimator:
        self.model.to(device)
        return self

    @torch.inference_mode()
    def __call__(self, image) -> DepthResult:
        from PIL import Image

        rgb = as_uint8_rgb(image)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        kwargs = {}
        if self.steps:
            kwargs["num_inference_steps"] = self.steps
        if self.processing_resolution:
            kwargs["processing_resolution"] = self.processing_resolution
        # bf16 on CPU is autocast over fp32 weights (as for the other depth models): diffusers' preprocessing resizes
        # with antialias, which has no bf16 CPU kernel
        cpu_bf16 = self.device.type == "cpu" and self.dtype == torch.bfloat16
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16) if cpu_bf16 else contextlib.nullcontext():
                out = self.pipe(Image.fromarray(rgb), ensemble_size=self.ensemble, match_input_resolution=True,
                                generator=generator, output_type="pt", **kwargs)
        finally:
            # the pipeline caches the empty prompt's embedding on the compute device, outside `model`: ComfyUI's
            # model management (which moves `model`) would leave it on the GPU after offloading or unloading the
            # weights. It costs one text-encoder pass of two tokens to make again.
            if getattr(self.pipe, "empty_text_embedding", None) is not None:
                self.pipe.empty_text_embedding = None
        raw = _as_map(out.prediction).float().cpu()
        raw = torch.nan_to_num(raw, nan=0.0)
        disparity = normalise(1.0 - raw)
        return DepthResult(disparity=disparity, depth=1.0 - disparity, raw=raw)


def _as_map(prediction) -> Tensor:
    t = torch.as_tensor(prediction)
    while t.dim() > 2:
        t = t[0] if t.shape[0] == 1 else t.mean(0)
    return t


def load_marigold(folder: str | os.PathLike, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  steps: int = 0, ensemble: int = 1, processing_resolution: int = 0, seed: int = 0) -> MarigoldEstimator:
    """A :class:`MarigoldEstimator` from a local diffusers pipeline folder; never touches the network. ``dtype`` is
    resolved again through :mod:`cartoonseg.device` (a reduced precision the device cannot run becomes fp32)."""
    from .._optional import require

    check_marigold_settings(steps=steps, ensemble=ensemble, processing_resolution=processing_resolution)
    diffusers = require("diffusers", extra="diffusion", purpose="Marigold depth")
    follow_hub_progress_setting(diffusers)
    dtype = resolve_dtype(precision_of(dtype), device)
    refuse_cpu_fp16(dtype, device)
    weights = torch.float32 if torch.device(device).type == "cpu" else dtype  # CPU bf16: autocast (see __call__)
    pipe = diffusers.MarigoldDepthPipeline.from_pretrained(str(Path(folder)), local_files_only=True,
                                                           **dtype_argument(diffusers, weights))
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    return MarigoldEstimator(pipe, steps=steps, ensemble=ensemble, processing_resolution=processing_resolution,
                             seed=seed, dtype=dtype)
