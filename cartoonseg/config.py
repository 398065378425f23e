"""Typed configuration of the two models, with named presets.

The detector is RTMDet-Ins (Lyu et al. 2022, "RTMDet: An Empirical Study of Designing Real-Time Object
Detectors") as configured by CartoonSegmentation (arXiv 2312.01943, §4.1): the mmdet 3.x
``rtmdet-ins_{tiny,s,m,l,x}`` architecture with ``RTMDetInsSepBNHead`` and one class. The refiner is IS-Net
(Qin et al. 2022, "Highly Accurate Dichotomous Image Segmentation") with a 4-channel input (§4.2).

Sizes follow mmdet's configs: ``deepen_factor``/``widen_factor`` scale the CSPNeXt backbone; the neck and head
widths are explicit, exactly as in the mmdet preset files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

__all__ = [
    "DetectorConfig",
    "RefinerConfig",
    "DETECTOR_PRESETS",
    "REFINER_PRESETS",
    "detector_config",
    "refiner_config",
    "MAX_CANVAS",
    "MAX_CFG",
    "MAX_CHANNELS",
    "MAX_SAMPLER_STEPS",
    "MAX_SEED",
]

#: Largest detector / refiner canvas (pixels per side) a config or option accepts.
MAX_CANVAS = 8192
#: Largest channel count any layer of a config may declare (the X preset's widest layer has 1280).
MAX_CHANNELS = 4096
#: Limits of the diffusion samplers' settings (style editing, inpaint refinement): the classifier-free guidance scale
#: lies in [0, MAX_CFG] and the steps in [1, MAX_SAMPLER_STEPS] (ComfyUI's KSampler maxima).
MAX_CFG = 100.0
MAX_SAMPLER_STEPS = 10000
#: Largest sampler seed (ComfyUI's seed widgets; torch's generators take seeds up to this).
MAX_SEED = 2**64 - 1


def _check_int(owner: str, name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(value, float) and (
            not math.isfinite(value) or value != int(value)):
        raise ValueError(f"{owner}.{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{owner}.{name} must lie in [{low}, {high}], got {value!r}")
    return int(value)


def _check_float(owner: str, name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if not (low < value if open_low else low <= value) or not value <= high:
        raise ValueError(f"{owner}.{name} must lie in {'(' if open_low else '['}{low}, {high}], got {value!r}")
    return float(value)


def _check_seq(owner: str, name: str, value: Any, length: int) -> tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != length:
        raise ValueError(f"{owner}.{name} must have {length} entries, got {value!r}")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """RTMDet-Ins architecture and test-time settings.

    Attributes:
        deepen_factor: block-count multiplier of the CSPNeXt backbone (L: 1.0).
        widen_factor: channel multiplier of the CSPNeXt backbone (L: 1.0).
        num_classes: number of classes of the classification branch (released model: 1).
        neck_in_channels: backbone output channels at strides 8/16/32 (= neck inputs).
        neck_out_channels: neck output width (= head input width).
        neck_num_csp_blocks: CSPNeXtBlocks in every neck CSPLayer.
        head_feat_channels: width of the head's stacked convs.
        stacked_convs: stacked 3x3 convs per branch in the head.
        num_prototypes: prototype masks produced by the mask-feature module.
        dyconv_channels: hidden width of the per-instance dynamic convs.
        num_dyconvs: number of dynamic convs (the kernel vector length follows from these three).
        strides: feature strides of the three levels.
        expand_ratio: CSPLayer hidden-width ratio.
        channel_attention: channel attention in backbone CSPLayers.
        bn_eps: BatchNorm epsilon (the released config uses SyncBN defaults, 1e-5).
        det_size: letterbox canvas (pixels) of the test pipeline (images are resized, up or down, to fit).
        pad_value: letterbox fill value (raw pixel units).
        mean: normalisation mean in **B, G, R** order (the network sees BGR, as mmcv reads images).
        std: normalisation std in B, G, R order.
        score_thr: per-level candidate score threshold before NMS.
        nms_pre: per-level top-k before NMS.
        iou_thr: NMS IoU threshold (suppress if IoU > iou_thr).
        max_per_img: detections kept after NMS.
        mask_thr_binary: threshold of the coarse (stage-1) mask probabilities.
    """

    deepen_factor: float = 1.0
    widen_factor: float = 1.0
    num_classes: int = 1
    neck_in_channels: tuple[int, int, int] = (256, 512, 1024)
    neck_out_channels: int = 256
    neck_num_csp_blocks: int = 3
    head_feat_channels: int = 256
    stacked_convs: int = 2
    num_prototypes: int = 8
    dyconv_channels: int = 8
    num_dyconvs: int = 3
    strides: tuple[int, int, int] = (8, 16, 32)
    expand_ratio: float = 0.5
    channel_attention: bool = True
    bn_eps: float = 1e-5
    det_size: int = 640
    pad_value: float = 114.0
    mean: tuple[float, float, float] = (103.53, 116.28, 123.675)
    std: tuple[float, float, float] = (57.375, 57.12, 58.395)
    score_thr: float = 0.05
    nms_pre: int = 1000
    iou_thr: float = 0.6
    max_per_img: int = 100
    mask_thr_binary: float = 0.5

    def __post_init__(self) -> None:
        """Range-check every field (finite numbers, plausible sizes): a config read from a file is validated here,
        before any model is allocated from it."""
        o, i, f = "DetectorConfig", _check_int, _check_float
        if len(_check_seq(o, "neck_in_channels", self.neck_in_channels, 3)) != 3 or len(
                _check_seq(o, "strides", self.strides, 3)) != 3:
            raise ValueError("neck_in_channels and strides must have three entries (P5 architecture)")
        fields: dict[str, Any] = {
            "deepen_factor": f(o, "deepen_factor", self.deepen_factor, 0.0, 2.0, open_low=True),
            "widen_factor": f(o, "widen_factor", self.widen_factor, 0.0, 2.0, open_low=True),
            "num_classes": i(o, "num_classes", self.num_classes, 1, 10_000),
            "neck_in_channels": tuple(i(o, "neck_in_channels", c, 1, MAX_CHANNELS) for c in self.neck_in_channels),
            "neck_out_channels": i(o, "neck_out_channels", self.neck_out_channels, 1, MAX_CHANNELS),
            "neck_num_csp_blocks": i(o, "neck_num_csp_blocks", self.neck_num_csp_blocks, 1, 16),
            "head_feat_channels": i(o, "head_feat_channels", self.head_feat_channels, 1, MAX_CHANNELS),
            "stacked_convs": i(o, "stacked_convs", self.stacked_convs, 1, 16),
            "num_prototypes": i(o, "num_prototypes", self.num_prototypes, 1, 256),
            "dyconv_channels": i(o, "dyconv_channels", self.dyconv_channels, 1, 256),
            "num_dyconvs": i(o, "num_dyconvs", self.num_dyconvs, 2, 8),
            "strides": tuple(i(o, "strides", s, 1, 256) for s in self.strides),
            "expand_ratio": f(o, "expand_ratio", self.expand_ratio, 0.0, 4.0, open_low=True),
            "bn_eps": f(o, "bn_eps", self.bn_eps, 0.0, 1.0, open_low=True),
            "det_size": i(o, "det_size", self.det_size, 32, MAX_CANVAS),
            "pad_value": f(o, "pad_value", self.pad_value, 0.0, 255.0),
            "mean": tuple(f(o, "mean", v, -1e4, 1e4) for v in _check_seq(o, "mean", self.mean, 3)),
            "std": tuple(f(o, "std", v, 0.0, 1e4, open_low=True) for v in _check_seq(o, "std", self.std, 3)),
            "score_thr": f(o, "score_thr", self.score_thr, 0.0, 1.0),
            "nms_pre": i(o, "nms_pre", self.nms_pre, 1, 100_000),
            "iou_thr": f(o, "iou_thr", self.iou_thr, 0.0, 1.0),
            "max_per_img": i(o, "max_per_img", self.max_per_img, 1, 10_000),
            "mask_thr_binary": f(o, "mask_thr_binary", self.mask_thr_binary, 0.0, 1.0),
        }
        if fields["det_size"] % 32:
            raise ValueError(f"det_size must be a positive multiple of 32, got {self.det_size}")
        if list(fields["strides"]) != sorted(set(fields["strides"])):
            raise ValueError(f"strides must increase, got {self.strides}")
        if not isinstance(self.channel_attention, bool):
            raise ValueError(f"DetectorConfig.channel_attention must be true or false, got {self.channel_attention!r}")
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def num_dynamic_params(self) -> int:
        """Length of the per-prior dynamic kernel vector (169 for the released model)."""
        weights, biases = self.dynamic_param_sizes
        return sum(weights) + sum(biases)

    @property
    def dynamic_param_sizes(self) -> tuple[list[int], list[int]]:
        """(weight sizes, bias sizes) of the dynamic convs, in the layout of mmdet's ``parse_dynamic_params``."""
        weights, biases = [], []
        for i in range(self.num_dyconvs):
            if i == 0:
                weights.append((self.num_prototypes + 2) * self.dyconv_channels)
                biases.append(self.dyconv_channels)
            elif i == self.num_dyconvs - 1:
                weights.append(self.dyconv_channels)
                biases.append(1)
            else:
                weights.append(self.dyconv_channels * self.dyconv_channels)
                biases.append(self.dyconv_channels)
        return weights, biases

    def replace(self, **changes: Any) -> DetectorConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DetectorConfig fields {unknown}; allowed: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _rtmdet_ins(deepen: float, widen: float, neck: tuple[int, int, int], width: int, blocks: int) -> DetectorConfig:
    return DetectorConfig(
        deepen_factor=deepen,
        widen_factor=widen,
        neck_in_channels=neck,
        neck_out_channels=width,
        neck_num_csp_blocks=blocks,
        head_feat_channels=width,
    )


#: mmdet 3.3 ``configs/rtmdet/rtmdet-ins_{tiny,s,m,l,x}_8xb32-300e_coco.py`` architectures with one class.
DETECTOR_PRESETS: dict[str, DetectorConfig] = {
    "tiny": _rtmdet_ins(0.167, 0.375, (96, 192, 384), 96, 1),
    "s": _rtmdet_ins(0.33, 0.5, (128, 256, 512), 128, 1),
    "m": _rtmdet_ins(0.67, 0.75, (192, 384, 768), 192, 2),
    "l": _rtmdet_ins(1.0, 1.0, (256, 512, 1024), 256, 3),
    "x": _rtmdet_ins(1.33, 1.25, (320, 640, 1280), 320, 4),
}


@dataclasses.dataclass(frozen=True)
class RefinerConfig:
    """IS-Net (ISNetDIS) refiner.

    Attributes:
        in_ch: input channels (4 = B, G, R, coarse mask for the released refiner; 3 for plain IS-Net).
        out_ch: output channels of the side outputs.
        width: channel multiplier of every stage (1.0 = the released model; smaller values are for tests).
        refine_size: square canvas of the refiner input (images are only scaled down to fit, never up).
        mask_thr: threshold of the refined mask probabilities (the original's ``AnimeInsSeg.mask_thr``).
    """

    in_ch: int = 4
    out_ch: int = 1
    width: float = 1.0
    refine_size: int = 720
    mask_thr: float = 0.3

    def __post_init__(self) -> None:
        """Range-check every field, before any model is allocated from it."""
        o = "RefinerConfig"
        fields = {
            "in_ch": _check_int(o, "in_ch", self.in_ch, 1, 16),
            "out_ch": _check_int(o, "out_ch", self.out_ch, 1, 16),
            "width": _check_float(o, "width", self.width, 0.0, 4.0, open_low=True),
            "refine_size": _check_int(o, "refine_size", self.refine_size, 32, MAX_CANVAS),
            "mask_thr": _check_float(o, "mask_thr", self.mask_thr, 0.0, 1.0),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> RefinerConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefinerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown RefinerConfig fields {unknown}; allowed: {sorted(names)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


REFINER_PRESETS: dict[str, RefinerConfig] = {
    "isnet": RefinerConfig(),
    "tiny": RefinerConfig(width=0.125),
}


def detector_config(name: str, **overrides: Any) -> DetectorConfig:
    """The named detector preset (``tiny``, ``s``, ``m``, ``l``, ``x``), optionally with fields replaced."""
    if name not in DETECTOR_PRESETS:
        raise ValueError(f"unknown detector preset {name!r}; allowed: {sorted(DETECTOR_PRESETS)}")
    return DETECTOR_PRESETS[name].replace(**overrides)


def refiner_config(name: str = "isnet", **overrides: Any) -> RefinerConfig:
    """The named refiner preset (``isnet`` = released architecture, ``tiny`` for tests)."""
    if name not in REFINER_PRESETS:
        raise ValueError(f"unknown refiner preset {name!r}; allowed: {sorted(REFINER_PRESETS)}")
    return REFINER_PRESETS[name].replace(**overrides)
