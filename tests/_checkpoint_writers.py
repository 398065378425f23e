"""Writers of the *foreign* weight layouts, for tests only: a model saved as the released mmengine
``rtmdetl_e60.ckpt`` (config source text in ``meta['cfg']``, every alias key) and as the flat
``refine_last.ckpt``, so the real readers and filters of ``cartoonseg.checkpoint`` are tested on files of the
original layouts without downloading them. (The library writes only its own safetensors format.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cartoonseg.config import DetectorConfig
from cartoonseg.models.isnet import ISNetDIS
from cartoonseg.models.rtmdet_ins import RTMDetIns

__all__ = ["mmengine_config_text", "save_flat_refiner_checkpoint", "save_mmengine_detector_checkpoint"]


def _py(value: Any, indent: int = 0) -> str:
    """Format a value as mmengine ``pretty_text``-style Python source (``dict(key=value)``)."""
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return "dict()"
        items = ",\n".join(f"{pad}{k}={_py(v, indent + 4)}" for k, v in value.items())
        return "dict(\n" + items + ")"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_py(v, indent + 4) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    return repr(value)


def mmengine_config_text(config: DetectorConfig) -> str:
    """mmengine-style config source describing ``config`` (what ``meta['cfg']`` of a released file holds)."""
    c = config
    head = dict(
        type="RTMDetInsSepBNHeadCustom",
        num_classes=c.num_classes,
        in_channels=c.neck_out_channels,
        stacked_convs=c.stacked_convs,
        share_conv=True,
        pred_kernel_size=1,
        feat_channels=c.head_feat_channels,
        act_cfg=dict(type="SiLU", inplace=True),
        norm_cfg=dict(type="SyncBN", requires_grad=True),
        anchor_generator=dict(type="MlvlPointGenerator", offset=0, strides=list(c.strides)),
        bbox_coder=dict(type="DistancePointBBoxCoder"),
        num_prototypes=c.num_prototypes,
        dyconv_channels=c.dyconv_channels,
        num_dyconvs=c.num_dyconvs,
    )
    test_cfg = dict(
        nms_pre=c.nms_pre,
        min_bbox_size=0,
        score_thr=c.score_thr,
        nms=dict(type="nms", iou_threshold=c.iou_thr),
        max_per_img=c.max_per_img,
        mask_thr_binary=c.mask_thr_binary,
    )
    model = dict(
        type="RTMDet",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=list(c.mean), std=list(c.std), bgr_to_rgb=False),
        backbone=dict(
            type="CSPNeXt",
            arch="P5",
            expand_ratio=c.expand_ratio,
            deepen_factor=c.deepen_factor,
            widen_factor=c.widen_factor,
            channel_attention=c.channel_attention,
            norm_cfg=dict(type="SyncBN"),
            act_cfg=dict(type="SiLU", inplace=True),
        ),
        neck=dict(
            type="CSPNeXtPAFPN",
            in_channels=list(c.neck_in_channels),
            out_channels=c.neck_out_channels,
            num_csp_blocks=c.neck_num_csp_blocks,
            expand_ratio=c.expand_ratio,
            norm_cfg=dict(type="SyncBN"),
            act_cfg=dict(type="SiLU", inplace=True),
        ),
        bbox_head=head,
        test_cfg=test_cfg,
    )
    pipeline = [
        dict(type="LoadImageFromFile", file_client_args=dict(backend="disk")),
        dict(type="Resize", scale=(c.det_size, c.det_size), keep_ratio=True),
        dict(type="Pad", size=(c.det_size, c.det_size), pad_val=dict(img=(c.pad_value,) * 3)),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
    ]
    parts = [
        "default_scope = 'mmdet'",
        f"model = {_py(model)}",
        f"test_pipeline = {_py(pipeline)}",
        "test_dataloader = dict(batch_size=1, dataset=dict(type='CocoDataset', pipeline=test_pipeline))",
    ]
    return "\n".join(parts) + "\n"


def save_mmengine_detector_checkpoint(model: RTMDetIns, path: str | os.PathLike) -> Path:
    """Write ``model`` in the released ``rtmdetl_e60.ckpt`` layout: ``{'meta': {'cfg': text, ...}, 'state_dict':
    ...}`` with every alias key (sharing storage, as mmengine's Runner writes them). For tests and interop."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "meta": {
            "cfg": mmengine_config_text(model.config),
            "mmengine_version": "0.10.5",
            "epoch": 60,
            "dataset_meta": {"classes": ("object",)},
        },
        "state_dict": model.state_dict(),
    }
    torch.save(checkpoint, str(path))
    return path


def save_flat_refiner_checkpoint(model: ISNetDIS, path: str | os.PathLike) -> Path:
    """Write ``model`` as a flat state dict, the released ``refine_last.ckpt`` layout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), str(path))
    return path
