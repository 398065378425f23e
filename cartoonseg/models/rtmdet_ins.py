"""RTMDet-Ins (Lyu et al. 2022) instance segmentation detector, stage 1 of CartoonSegmentation (arXiv 2312.01943
§4.1): CSPNeXt backbone, CSPNeXt-PAFPN neck and the separate-BN instance head with dynamic mask kernels.

Reproduces mmdet 3.3's ``RTMDetInsSepBNHead`` inference exactly, including its quirks:

* ``reg_convs[n]`` *is* ``cls_convs[n]`` (mmdet appends the same ModuleList), and with ``share_conv`` the conv
  weights of every level are level 0's (BN stays per level). The module tree here has the same aliasing, so
  ``state_dict()`` lists every alias key of the released checkpoint and loads it strictly;
* ``bbox_pred = relu(rtm_reg(x)) * stride`` (no exp, no Scale); priors at cell corners (offset 0);
* box clamping to the *padded* canvas, rescale without clipping to the original image;
* mask rescale with the w-factor applied to the height axis, then a top-left crop.

The per-instance dynamic convolution runs in fp32 with autocast disabled (fp16 overflows on its logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DETECTOR_PRESETS, DetectorConfig
from .cspnext import CSPNeXt, CSPNeXtPAFPN
from ..structures import check_mask_budget
from .layers import ConvBNAct
from .weights import CheckpointError, strip_prefix, tensor_entries

__all__ = [
    "Detections",
    "HeadOutputs",
    "MaskFeatModule",
    "RTMDetIns",
    "RTMDetInsSepBNHead",
    "batched_nms",
    "filter_mmdet_rtmdet_ins",
    "infer_detector_config",
    "nms",
]

#: bytes of full-resolution float temporaries per chunk in :meth:`RTMDetIns.decode_masks`
DECODE_CHUNK_BYTES = 256 << 20


@dataclass
class HeadOutputs:
    """Raw head outputs for a batch. Lists are per level (strides 8, 16, 32).

    Attributes:
        cls_scores: logits ``[B, num_classes, H_l, W_l]``.
        bbox_preds: distances (left, top, right, bottom) in input pixels ``[B, 4, H_l, W_l]``.
        kernel_preds: dynamic-conv parameters ``[B, K, H_l, W_l]`` (K = 169 for the released model).
        mask_feat: prototypes ``[B, num_prototypes, H_0, W_0]`` at stride 8.
    """

    cls_scores: list[Tensor]
    bbox_preds: list[Tensor]
    kernel_preds: list[Tensor]
    mask_feat: Tensor


@dataclass
class Detections:
    """Post-processed detections of one image (before any score filter of the caller).

    Attributes:
        boxes: xyxy in original-image pixels ``[N,4]`` (may extend past the image, as in the reference).
        scores: ``[N]``, descending.
        labels: ``[N]`` int64.
        priors: ``[N,4]`` (x, y, stride_w, stride_h) of the selected priors.
        kernels: ``[N,K]`` dynamic-conv parameters.
        mask_logits: ``[N,H,W]`` logits at the original image size (None when masks were not requested).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    priors: Tensor
    kernels: Tensor
    mask_logits: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, keep: Tensor) -> Detections:
        return Detections(
            self.boxes[keep],
            self.scores[keep],
            self.labels[keep],
            self.priors[keep],
            self.kernels[keep],
            None if self.mask_logits is None else self.mask_logits[keep],
        )


class MaskFeatModule(nn.Module):
    """Fuses the three levels at stride 8 and projects them to ``num_prototypes`` prototype masks."""

    def __init__(self, in_channels: int, feat_channels: int, num_levels: int, num_prototypes: int, bn_eps: float):
        super().__init__()
        self.fusion_conv = nn.Conv2d(num_levels * in_channels, in_channels, 1)
        self.stacked_convs = nn.Sequential(
            *[ConvBNAct(in_channels if i == 0 else feat_channels, feat_channels, 3, bn_eps=bn_eps) for i in range(4)]
        )
        self.projection = nn.Conv2d(feat_channels, num_prototypes, 1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        size = feats[0].shape[-2:]
        fused = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return self.projection(self.stacked_convs(self.fusion_conv(torch.cat(fused, dim=1))))


class RTMDetInsSepBNHead(nn.Module):
    """Instance head with per-level BN, shared convs across levels and dynamic mask kernels."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        cin, feat, eps = config.neck_out_channels, config.head_feat_channels, config.bn_eps
        self.strides = config.strides
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.kernel_convs = nn.ModuleList()
        self.rtm_cls = nn.ModuleList()
        self.rtm_reg = nn.ModuleList()
        self.rtm_kernel = nn.ModuleList()
        self.rtm_obj = nn.ModuleList()  # empty: with_objectness=False in the released config
        for _ in self.strides:
            cls_convs = nn.ModuleList(
                ConvBNAct(cin if i == 0 else feat, feat, 3, bn_eps=eps) for i in range(config.stacked_convs)
            )
            kernel_convs = nn.ModuleList(
                ConvBNAct(cin if i == 0 else feat, feat, 3, bn_eps=eps) for i in range(config.stacked_convs)
            )
            self.cls_convs.append(cls_convs)
            self.reg_convs.append(cls_convs)  # the same modules, as in mmdet (keys are aliases)
            self.kernel_convs.append(kernel_convs)
            self.rtm_cls.append(nn.Conv2d(feat, config.num_classes, 1))
            self.rtm_reg.append(nn.Conv2d(feat, 4, 1))
            self.rtm_kernel.append(nn.Conv2d(feat, config.num_dynamic_params, 1))
        for level in range(1, len(self.strides)):  # share_conv: conv weights of level 0, BN per level
            for i in range(config.stacked_convs):
                self.cls_convs[level][i].conv = self.cls_convs[0][i].conv
        self.mask_head = MaskFeatModule(cin, feat, len(self.strides), config.num_prototypes, eps)

    def forward(self, feats: list[Tensor]) -> HeadOutputs:
        mask_feat = self.mask_head(feats)
        cls_scores, bbox_preds, kernel_preds = [], [], []
        for level, (x, stride) in enumerate(zip(feats, self.strides)):
            cls_feat = x
            for layer in self.cls_convs[level]:
                cls_feat = layer(cls_feat)
            kernel_feat = x
            for layer in self.kernel_convs[level]:
                kernel_feat = layer(kernel_feat)
            cls_scores.append(self.rtm_cls[level](cls_feat))
            kernel_preds.append(self.rtm_kernel[level](kernel_feat))
            # reg_convs are cls_convs, so the regression features are the classification features.
            bbox_preds.append(F.relu(self.rtm_reg[level](cls_feat)) * stride)
        return HeadOutputs(cls_scores, bbox_preds, kernel_preds, mask_feat)


def grid_priors(height: int, width: int, stride: int, device: torch.device, dtype=torch.float32) -> Tensor:
    """Prior points ``[H*W, 4]`` = (x, y, stride, stride) at cell corners (offset 0), row-major, x fastest."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) * stride,
        torch.arange(width, device=device, dtype=dtype) * stride,
        indexing="ij",
    )
    s = torch.full_like(xs, float(stride))
    return torch.stack([xs.flatten(), ys.flatten(), s.flatten(), s.flatten()], dim=1)


def nms(boxes: Tensor, scores: Tensor, iou_thr: float, max_keep: int | None = None) -> Tensor:
    """Greedy NMS (mmcv semantics: descending score, suppress when IoU > ``iou_thr``, areas without +1 offset).

    Args:
        boxes: ``[N,4]`` xyxy.
        scores: ``[N]``.
        iou_thr: IoU above which a lower-scored box is suppressed.
        max_keep: stop after this many kept boxes (greedy order makes the first ones independent of the rest).

    Returns:
        int64 indices of the kept boxes, in descending score order.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True)[1]  # stable: ties keep input order (deterministic)
    b = boxes[order].float()
    x1, y1, x2, y2 = b.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    n = b.shape[0]
    keep: list[int] = []
    suppressed = torch.zeros(n, dtype=torch.bool, device=b.device)
    limit = n if max_keep is None else max_keep
    chunk = 256  # compute IoU rows lazily, a block at a time, to bound memory for large N
    rows: Tensor | None = None
    row_start = -1
    sup_cpu = suppressed.cpu()
    i = 0
    while i < n and len(keep) < limit:
        if sup_cpu[i]:
            i += 1
            continue
        keep.append(i)
        if rows is None or not (row_start <= i < row_start + chunk):
            row_start = i
            end = min(n, i + chunk)
            xx1 = torch.maximum(x1[i:end, None], x1[None])
            yy1 = torch.maximum(y1[i:end, None], y1[None])
            xx2 = torch.minimum(x2[i:end, None], x2[None])
            yy2 = torch.minimum(y2[i:end, None], y2[None])
            inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
            rows = (inter / (areas[i:end, None] + areas[None] - inter) > iou_thr).cpu()
        later = rows[i - row_start].clone()
        later[: i + 1] = False
        sup_cpu |= later
        i += 1
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_thr: float, max_keep: int | None = None) -> Tensor:
    """Class-aware NMS by coordinate offsets (mmcv ``batched_nms``); returns kept indices, descending score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if labels.max() == labels.min():
        return nms(boxes, scores, iou_thr, max_keep)
    offsets = labels.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_thr, max_keep)


class RTMDetIns(nn.Module):
    """RTMDet-Ins detector.

    ``forward(x)`` takes the normalised **BGR** batch ``[B,3,H,W]`` (H, W multiples of 32) and returns
    :class:`HeadOutputs`. :meth:`postprocess` turns one image's outputs into :class:`Detections` in original
    image pixels. Pre-processing (letterbox, normalisation) lives in :mod:`cartoonseg.transforms`.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DetectorConfig()
        self.backbone = CSPNeXt(config)
        self.neck = CSPNeXtPAFPN(config)
        self.bbox_head = RTMDetInsSepBNHead(config)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, bgr: Tensor) -> Tensor:
        """``[B,3,H,W]`` BGR in raw pixel units (0..255) -> network input."""
        return (bgr.float() - self.mean) / self.std

    def forward(self, x: Tensor) -> HeadOutputs:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"RTMDetIns expects [B,3,H,W], got shape {tuple(x.shape)}")
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"RTMDetIns input height/width must be multiples of 32, got {tuple(x.shape[-2:])}")
        return self.bbox_head(self.neck(self.backbone(x)))

    # ------------------------------------------------------------------ post-processing
    def postprocess(
        self,
        outputs: HeadOutputs,
        index: int,
        *,
        img_shape: tuple[int, int],
        ori_shape: tuple[int, int],
        scale_factor: tuple[float, float],
        score_thr: float | None = None,
        nms_pre: int | None = None,
        iou_thr: float | None = None,
        max_per_img: int | None = None,
        min_score: float | None = None,
        with_masks: bool = True,
        with_nms: bool = True,
    ) -> Detections:
        """Decode boxes, filter, NMS and (optionally) decode masks for image ``index`` of the batch.

        Args:
            outputs: head outputs of the batch.
            index: image index in the batch.
            img_shape: (h, w) the boxes are clamped to (the *padded* canvas after letterboxing, as mmdet does).
            ori_shape: (h, w) of the original image.
            scale_factor: (w_scale, h_scale) of the letterbox resize.
            score_thr, nms_pre, iou_thr, max_per_img: override the config's test settings.
            min_score: drop detections with score <= this after NMS (the caller's score filter; applied before
                mask decoding to save work, which does not change the kept masks).
            with_masks: decode mask logits at the original size.
            with_nms: False returns every candidate above ``score_thr`` (at most ``nms_pre`` per level) without
                NMS or ``max_per_img``: the candidate pool that box prompts pick from (the reference's
                ``infer_embeddings``).
        """
        cfg = self.config
        score_thr = cfg.score_thr if score_thr is None else score_thr
        nms_pre = cfg.nms_pre if nms_pre is None else nms_pre
        iou_thr = cfg.iou_thr if iou_thr is None else iou_thr
        max_per_img = cfg.max_per_img if max_per_img is None else max_per_img
        device = outputs.mask_feat.device
        all_scores, all_labels, all_boxes, all_priors, all_kernels = [], [], [], [], []
        for level, stride in enumerate(cfg.strides):
            cls = outputs.cls_scores[level][index]
            h, w = cls.shape[-2:]
            scores = cls.permute(1, 2, 0).reshape(-1, cfg.num_classes).float().sigmoid()
            bbox = outputs.bbox_preds[level][index].permute(1, 2, 0).reshape(-1, 4).float()
            kernels = outputs.kernel_preds[level][index].permute(1, 2, 0).reshape(-1, cfg.num_dynamic_params)
            priors = grid_priors(h, w, stride, device)
            valid = scores > score_thr
            valid_scores = scores[valid]
            valid_idx = valid.nonzero()
            order = valid_scores.sort(descending=True)[1][:nms_pre]
            keep_idx, labels = valid_idx[order].unbind(1)
            all_scores.append(valid_scores[order])
            all_labels.append(labels)
            all_boxes.append(bbox[keep_idx])
            all_priors.append(priors[keep_idx])
            all_kernels.append(kernels[keep_idx].float())
        scores = torch.cat(all_scores)
        labels = torch.cat(all_labels)
        priors = torch.cat(all_priors)
        dist = torch.cat(all_boxes)
        kernels = torch.cat(all_kernels)
        px, py = priors[:, 0], priors[:, 1]
        boxes = torch.stack([px - dist[:, 0], py - dist[:, 1], px + dist[:, 2], py + dist[:, 3]], dim=1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=img_shape[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=img_shape[0])
        inv = torch.tensor([1 / scale_factor[0], 1 / scale_factor[1]] * 2, device=device)
        boxes = boxes * inv
        wh_ok = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        dets = Detections(boxes, scores, labels, priors, kernels).select(wh_ok.nonzero().flatten())
        if with_nms:
            keep = batched_nms(dets.boxes, dets.scores, dets.labels, iou_thr, max_keep=max_per_img)
            dets = dets.select(keep[:max_per_img])
        if min_score is not None:
            dets = dets.select((dets.scores > min_score).nonzero().flatten())
        if with_masks:
            dets.mask_logits = self.decode_masks(
                outputs.mask_feat[index], dets, ori_shape=ori_shape, scale_factor=scale_factor
            )
        return dets

    def dynamic_mask_logits(self, mask_feat: Tensor, kernels: Tensor, priors: Tensor) -> Tensor:
        """Per-instance dynamic convs over [rel. coords, prototypes] -> logits ``[N, H0, W0]`` at stride 8.

        Runs in fp32 with autocast disabled: the three chained 1x1 convs overflow fp16.
        """
        cfg = self.config
        n = kernels.shape[0]
        h, w = mask_feat.shape[-2:]
        if n == 0:
            return mask_feat.new_zeros(0, h, w, dtype=torch.float32)
        with torch.autocast(device_type=mask_feat.device.type, enabled=False):
            mask_feat = mask_feat.float()
            kernels = kernels.float()
            priors = priors.float()
            grid = grid_priors(h, w, cfg.strides[0], mask_feat.device)[:, :2]  # [HW, 2]
            rel = (priors[:, None, :2] - grid[None]) / (priors[:, None, 2:3] * 8)  # [N, HW, 2]
            rel = rel.permute(0, 2, 1).reshape(n, 2, h, w)
            x = torch.cat([rel, mask_feat[None].expand(n, -1, -1, -1)], dim=1).reshape(1, -1, h, w)
            weight_sizes, bias_sizes = cfg.dynamic_param_sizes
            splits = torch.split(kernels, weight_sizes + bias_sizes, dim=1)
            layers = cfg.num_dyconvs
            for i in range(layers):
                out_ch = 1 if i == layers - 1 else cfg.dyconv_channels
                weight = splits[i].reshape(n * out_ch, -1, 1, 1)
                bias = splits[layers + i].reshape(n * out_ch)
                x = F.conv2d(x, weight, bias, groups=n)
                if i < layers - 1:
                    x = F.relu(x)
            return x.reshape(n, h, w)

    def decode_binary_masks(
        self,
        mask_feat: Tensor,
        dets: Detections,
        *,
        ori_shape: tuple[int, int],
        scale_factor: tuple[float, float],
        thr: float | None = None,
    ) -> Tensor:
        """``sigmoid(decode_masks(...)) > thr`` as bool ``[N, ori_h, ori_w]`` (``thr``: the config's
        ``mask_thr_binary``), the same pixels with less work: a mask whose stride-8 logits all lie clearly below
        the threshold logit is empty without being upsampled (bilinear resizes only form convex combinations, so
        no value can rise above the largest input), and the rescale is skipped when it keeps the size (an exact
        identity). The float maps exist only for a chunk of masks at a time.
        """
        thr = self.config.mask_thr_binary if thr is None else float(thr)
        if not 0.0 < thr < 1.0:
            raise ValueError(f"mask threshold must lie in (0, 1), got {thr}")
        ori_h, ori_w = ori_shape
        logits = self.dynamic_mask_logits(mask_feat, dets.kernels, dets.priors)
        n = logits.shape[0]
        out = torch.zeros(n, ori_h, ori_w, dtype=torch.bool, device=logits.device)
        if n == 0:
            return out
        t = math.log(thr / (1.0 - thr))
        band = 1e-2 * max(1.0, abs(t))
        live = (logits.flatten(1).amax(1) > t - band).nonzero().flatten()
        if live.numel() == 0:
            return out
        stride = float(self.config.strides[0])
        h8, w8 = math.floor(logits.shape[-2] * stride), math.floor(logits.shape[-1] * stride)
        size = [math.ceil(h8 * (1 / scale_factor[0])), math.ceil(w8 * (1 / scale_factor[1]))]
        step = max(1, DECODE_CHUNK_BYTES // (4 * max(1, size[0] * size[1])))
        with torch.autocast(device_type=logits.device.type, enabled=False):
            for start in range(0, live.numel(), step):
                idx = live[start : start + step]
                up = F.interpolate(logits[None, idx], scale_factor=stride, mode="bilinear")
                if [up.shape[-2], up.shape[-1]] != size:
                    up = F.interpolate(up, size=size, mode="bilinear", align_corners=False)
                up = up[0, :, :ori_h, :ori_w]
                if up.shape[-2] < ori_h or up.shape[-1] < ori_w:  # as decode_masks
                    up = F.pad(up[None], (0, ori_w - up.shape[-1], 0, ori_h - up.shape[-2]), mode="replicate")[0]
                out[idx] = up.sigmoid_() > thr
                del up
        return out

    def decode_masks(
        self, mask_feat: Tensor, dets: Detections, *, ori_shape: tuple[int, int], scale_factor: tuple[float, float]
    ) -> Tensor:
        """Mask logits ``[N, ori_h, ori_w]``: dynamic convs, x8 bilinear, rescale (mmdet's axis quirk), crop.

        The full-resolution maps are computed a few instances at a time (about 256 MB of temporaries per chunk)
        into one preallocated output: interpolation is per channel, so the result equals the all-at-once one bit
        for bit while the peak memory stays near the size of the output (4 bytes per pixel per instance).
        """
        logits = self.dynamic_mask_logits(mask_feat, dets.kernels, dets.priors)
        ori_h, ori_w = ori_shape
        n = logits.shape[0]
        if n == 0:
            return logits.new_zeros(0, ori_h, ori_w)
        stride = float(self.config.strides[0])
        h8, w8 = math.floor(logits.shape[-2] * stride), math.floor(logits.shape[-1] * stride)
        # mmdet sizes the rescale with 1/scale_factor[0] (the w factor) on the HEIGHT axis; reproduce it.
        size = [math.ceil(h8 * (1 / scale_factor[0])), math.ceil(w8 * (1 / scale_factor[1]))]
        check_mask_budget(n, ori_h, ori_w, "detected instance masks")
        out = logits.new_empty(n, ori_h, ori_w)
        step = max(1, DECODE_CHUNK_BYTES // (4 * max(1, size[0] * size[1])))
        with torch.autocast(device_type=logits.device.type, enabled=False):
            for start in range(0, n, step):
                up = F.interpolate(logits[None, start : start + step], scale_factor=stride, mode="bilinear")
                up = F.interpolate(up, size=size, mode="bilinear", align_corners=False)[..., :ori_h, :ori_w]
                if up.shape[-2] < ori_h or up.shape[-1] < ori_w:
                    # Extreme aspect ratios: the reference's rounding leaves the map a few pixels short (and its
                    # masks would not match the image); extend the edge instead.
                    pad = (0, ori_w - up.shape[-1], 0, ori_h - up.shape[-2])
                    up = F.pad(up, pad, mode="replicate")
                out[start : start + step] = up[0]
                del up
        return out


# ---------------------------------------------------------------------------------------------- checkpoints
def filter_mmdet_rtmdet_ins(checkpoint: dict[str, Any]) -> dict[str, Tensor]:
    """mmengine/mmdet RTMDet-Ins checkpoint -> state dict with this project's (= mmdet's) key names.

    Takes ``checkpoint['state_dict']`` when present, strips a ``module.`` (DDP) prefix, drops the non-weight
    ``data_preprocessor.*`` entries, and checks that aliased keys (``reg_convs`` = ``cls_convs``; level-1/2 conv
    weights = level 0's) hold equal tensors, since the model can only hold one of them.
    """
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, dict):
        raise CheckpointError(f"checkpoint['state_dict'] is a {type(sd).__name__}, expected a dict")
    sd = strip_prefix(tensor_entries(sd), "module.")
    sd = {k: v for k, v in sd.items() if not k.startswith("data_preprocessor.")}
    for key, value in sd.items():
        if key.startswith("bbox_head.reg_convs."):
            twin = key.replace("bbox_head.reg_convs.", "bbox_head.cls_convs.", 1)
            _check_alias(sd, key, twin)
        parts = key.split(".")
        if key.startswith("bbox_head.cls_convs.") and len(parts) > 4 and parts[2] != "0" and parts[4] == "conv":
            _check_alias(sd, key, ".".join(parts[:2] + ["0"] + parts[3:]))
    return sd


def _check_alias(sd: dict[str, Tensor], key: str, twin: str) -> None:
    if twin in sd and (sd[twin].shape != sd[key].shape or not torch.equal(sd[twin], sd[key])):
        raise CheckpointError(
            f"aliased checkpoint entries differ: {key} != {twin}; in RTMDetInsSepBNHead these are the same tensor"
        )


def infer_detector_config(state_dict: dict[str, Tensor], base: DetectorConfig | None = None) -> DetectorConfig:
    """Size an RTMDet-Ins from tensor shapes alone (for files without a config); test settings from ``base``."""
    try:
        stem = state_dict["backbone.stem.2.conv.weight"].shape[0]
        neck_in = tuple(state_dict[f"neck.out_convs.{i}.conv.weight"].shape[1] for i in range(3))
        neck_out = state_dict["neck.out_convs.0.conv.weight"].shape[0]
        feat = state_dict["bbox_head.cls_convs.0.0.conv.weight"].shape[0]
        num_classes = state_dict["bbox_head.rtm_cls.0.weight"].shape[0]
        num_prototypes = state_dict["bbox_head.mask_head.projection.weight"].shape[0]
        kernel_len = state_dict["bbox_head.rtm_kernel.0.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not an RTMDet-Ins state dict: key {exc.args[0]!r} is missing") from exc
    except (IndexError, AttributeError) as exc:
        raise CheckpointError(f"not an RTMDet-Ins state dict: a key tensor has the wrong rank ({exc})") from exc

    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})

    stage_blocks = (count("backbone.stage1.1.blocks."), count("backbone.stage2.1.blocks."))
    neck_blocks = count("neck.top_down_blocks.0.blocks.")
    stacked = count("bbox_head.kernel_convs.0.")
    widen = stem / 64
    deepen = None
    for preset in DETECTOR_PRESETS.values():  # recover the exact mmdet factor when a preset matches
        d = preset.deepen_factor
        if (max(round(3 * d), 1), max(round(6 * d), 1)) == stage_blocks:
            deepen = d
            break
    if deepen is None:
        deepen = stage_blocks[1] / 6
    base = base or DetectorConfig()
    try:
        config = base.replace(
            deepen_factor=deepen,
            widen_factor=widen,
            num_classes=num_classes,
            neck_in_channels=neck_in,
            neck_out_channels=neck_out,
            neck_num_csp_blocks=neck_blocks,
            head_feat_channels=feat,
            stacked_convs=stacked,
            num_prototypes=num_prototypes,
            channel_attention=any(".attention.fc." in k for k in state_dict),
        )
    except ValueError as exc:
        raise CheckpointError(f"cannot size an RTMDet-Ins from this state dict: {exc}") from exc
    if config.num_dynamic_params != kernel_len:
        raise CheckpointError(
            f"dynamic kernel length {kernel_len} does not match num_prototypes={num_prototypes}, "
            f"dyconv_channels={config.dyconv_channels}, num_dyconvs={config.num_dyconvs} "
            f"(expected {config.num_dynamic_params})"
        )
    return config
