"""Builders of every network (segment-anything's ``build_sam.py`` style): a preset name or a config in, a randomly
initialised model in eval mode out. Loading weights into them is :mod:`cartoonseg.checkpoint` (detector, refiner)
and :func:`cartoonseg.tagger.load_tagger` (SwinV2)."""

from __future__ import annotations

from typing import Any

from .config import DetectorConfig, RefinerConfig, detector_config, refiner_config
from .models.isnet import ISNetDIS
from .models.rtmdet_ins import RTMDetIns
from .models.swinv2 import SWINV2_PRESETS, SwinTransformerV2, SwinV2Config

__all__ = ["build_detector", "build_refiner", "build_swinv2"]


def build_detector(preset: str | DetectorConfig = "l", **overrides: Any) -> RTMDetIns:
    """A randomly initialised RTMDet-Ins from a preset name (``tiny/s/m/l/x``) or a config."""
    config = preset.replace(**overrides) if isinstance(preset, DetectorConfig) else detector_config(preset, **overrides)
    return RTMDetIns(config).eval()


def build_refiner(preset: str | RefinerConfig = "isnet", **overrides: Any) -> ISNetDIS:
    """A randomly initialised ISNetDIS from a preset name (``isnet``, ``tiny``) or a config."""
    config = preset.replace(**overrides) if isinstance(preset, RefinerConfig) else refiner_config(preset, **overrides)
    return ISNetDIS(config).eval()


def build_swinv2(preset: str | SwinV2Config = "wd-v3") -> SwinTransformerV2:
    """A randomly initialised :class:`SwinTransformerV2` from a preset name (``wd-v3``, ``tiny``) or a config."""
    if isinstance(preset, SwinV2Config):
        return SwinTransformerV2(preset)
    if preset not in SWINV2_PRESETS:
        raise ValueError(f"unknown SwinV2 preset {preset!r}; choose one of {sorted(SWINV2_PRESETS)}")
    return SwinTransformerV2(SWINV2_PRESETS[preset])
