"""RTMDet-Ins training targets and loss over the raw head outputs (Paper §4.1 eqs. 1-4; mmdet
``RTMDetHead.loss_by_feat`` + ``RTMDetInsHead.loss_mask_by_feat`` semantics, re-written).

For a batch:

1. flatten the three levels into ``P`` priors (cell corners, offset 0) and decode the distance predictions
   ``(l, t, r, b)`` into boxes;
2. assign every image with :class:`~cartoonseg.training.assigner.DynamicSoftLabelAssigner` on detached
   predictions, with each ground truth's mask centre of mass as the centre prior's centre;
3. ``L_conf`` = Quality Focal Loss over all priors (soft target = IoU of the assigned pair), weight 1;
   ``L_box`` = GIoU loss on positives weighted by that IoU, weight 2; both divided by the sum of assigned IoUs
   (averaged over processes, at least 1);
4. ``L_mask`` = Dice loss, weight 2, on the positives whose ground truth has a real mask (CartoonSegmentation's
   rule: ``ignore_mask`` instances get no mask loss), averaged over their count (averaged over processes, at
   least 1). Mask logits come from the dynamic convs at stride 8, upsampled bilinearly to the mask-loss stride
   (4 by default: x2), and the ground truth is sampled every ``stride`` pixels starting at ``stride // 2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..models.rtmdet_ins import HeadOutputs, RTMDetIns, grid_priors
from .assigner import AssignResult, DynamicSoftLabelAssigner, mask_centers
from .losses import dice_loss, giou_loss, quality_focal_loss

__all__ = ["RTMDetInsLossConfig", "flatten_outputs", "rtmdet_ins_loss"]


@dataclass(frozen=True)
class RTMDetInsLossConfig:
    """Loss weights and settings (defaults = the paper / mmdet RTMDet-Ins).

    Attributes:
        cls_weight: lambda_conf of the Quality Focal Loss.
        box_weight: lambda_box of the GIoU loss.
        mask_weight: lambda_mask of the Dice loss.
        qfl_beta: QFL focusing exponent.
        dice_eps: Dice epsilon.
        mask_loss_stride: resolution of the mask loss (mmdet default 4; the released config may use 2).
        assigner: the label assigner.
    """

    cls_weight: float = 1.0
    box_weight: float = 2.0
    mask_weight: float = 2.0
    qfl_beta: float = 2.0
    dice_eps: float = 5e-6
    mask_loss_stride: int = 4
    assigner: DynamicSoftLabelAssigner = field(default_factory=DynamicSoftLabelAssigner)


def _reduce_mean(value: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


def flatten_outputs(outputs: HeadOutputs, strides: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(cls ``[B,P,C]``, distances ``[B,P,4]``, kernels ``[B,P,K]``, priors ``[P,4]``) over all levels."""
    cls, dist_, ker, priors = [], [], [], []
    for level, stride in enumerate(strides):
        c = outputs.cls_scores[level]
        b, _, h, w = c.shape
        cls.append(c.permute(0, 2, 3, 1).reshape(b, h * w, -1))
        dist_.append(outputs.bbox_preds[level].permute(0, 2, 3, 1).reshape(b, h * w, 4))
        ker.append(outputs.kernel_preds[level].permute(0, 2, 3, 1).reshape(b, h * w, -1))
        priors.append(grid_priors(h, w, stride, c.device))
    return torch.cat(cls, 1), torch.cat(dist_, 1), torch.cat(ker, 1), torch.cat(priors, 0)


def _decode(priors: Tensor, d: Tensor) -> Tensor:
    px, py = priors[..., 0], priors[..., 1]
    return torch.stack([px - d[..., 0], py - d[..., 1], px + d[..., 2], py + d[..., 3]], -1)


def rtmdet_ins_loss(
    model: RTMDetIns,
    outputs: HeadOutputs,
    targets: list[dict[str, Tensor]],
    config: RTMDetInsLossConfig | None = None,
    *,
    return_assignments: bool = False,
) -> dict[str, Any]:
    """Total stage-1 loss of a batch.

    Args:
        model: the (unwrapped) detector; its config gives the strides and its dynamic convs decode the masks.
        outputs: ``model(x)`` for the batch (input canvas ``[B,3,H,W]``).
        targets: per image ``boxes`` float ``[G,4]`` xyxy input pixels, ``labels`` int64 ``[G]``, ``masks`` uint8
            ``[G,H,W]`` at the input canvas size, optional ``ignore_mask`` bool ``[G]``.
        config: :class:`RTMDetInsLossConfig`.
        return_assignments: also return each image's :class:`AssignResult` under ``assignments``.

    Returns:
        ``loss`` (sum), ``loss_cls``, ``loss_bbox``, ``loss_mask`` and ``num_pos`` (detached count).
    """
    cfg = config or RTMDetInsLossConfig()
    strides = model.config.strides
    cls, dists, kernels, priors = flatten_outputs(outputs, strides)
    bsz, num_priors, num_classes = cls.shape
    if len(targets) != bsz:
        raise ValueError(f"{len(targets)} targets for a batch of {bsz}")
    device = cls.device
    cls = cls.float()
    boxes = _decode(priors[None], dists.float())  # [B,P,4]

    labels_all = torch.full((bsz, num_priors), num_classes, dtype=torch.long, device=device)
    scores_all = torch.zeros(bsz, num_priors, device=device)
    pos_pred, pos_tgt, pos_w = [], [], []
    mask_logits, mask_gts = [], []
    assignments: list[AssignResult] = []
    in_h, in_w = outputs.mask_feat.shape[-2] * strides[0], outputs.mask_feat.shape[-1] * strides[0]
    s = cfg.mask_loss_stride
    if strides[0] % s:
        raise ValueError(f"mask_loss_stride {s} must divide the first stride {strides[0]}")
    for b, tgt in enumerate(targets):
        gt_boxes = tgt["boxes"].to(device).float()
        gt_labels = tgt["labels"].to(device).long()
        gt_masks = tgt["masks"].to(device)
        if gt_masks.shape[0] and gt_masks.shape[-2:] != (in_h, in_w):
            raise ValueError(
                f"target masks must be at the input size {(in_h, in_w)}, got {tuple(gt_masks.shape[-2:])}"
            )
        centres = mask_centers(gt_masks) if gt_masks.shape[0] else None
        res = cfg.assigner(cls[b].detach(), boxes[b].detach(), priors, gt_boxes, gt_labels, centres)
        assignments.append(res)
        pos = res.pos_mask.nonzero().flatten()
        labels_all[b] = res.labels
        scores_all[b] = res.ious
        if pos.numel() == 0:
            continue
        gi = res.gt_inds[pos]
        pos_pred.append(boxes[b, pos])
        pos_tgt.append(gt_boxes[gi])
        pos_w.append(res.ious[pos])
        ignore = tgt.get("ignore_mask")
        keep = torch.ones_like(gi, dtype=torch.bool) if ignore is None else ~ignore.to(device)[gi]
        if bool(keep.any()):
            mpos, mgi = pos[keep], gi[keep]
            logits = model.dynamic_mask_logits(outputs.mask_feat[b], kernels[b, mpos], priors[mpos])
            if strides[0] != s:
                logits = F.interpolate(
                    logits[None], scale_factor=strides[0] // s, mode="bilinear", align_corners=False
                )[0]
            gt = gt_masks[mgi]
            mask_logits.append(logits)
            mask_gts.append(gt[:, s // 2 :: s, s // 2 :: s].float())

    avg = _reduce_mean(scores_all.sum().detach()).clamp(min=1.0)
    loss_cls = quality_focal_loss(
        cls.reshape(-1, num_classes), labels_all.flatten(), scores_all.flatten(), cfg.qfl_beta
    )
    loss_cls = cfg.cls_weight * loss_cls.sum() / avg
    if pos_pred:
        w = torch.cat(pos_w)
        loss_bbox = cfg.box_weight * (giou_loss(torch.cat(pos_pred), torch.cat(pos_tgt)) * w).sum() / avg
    else:
        loss_bbox = dists.sum() * 0.0
    num_mask = torch.tensor(float(sum(m.shape[0] for m in mask_logits)), device=device)
    num_mask_avg = _reduce_mean(num_mask).clamp(min=1.0)
    if mask_logits:
        loss_mask = cfg.mask_weight * dice_loss(torch.cat(mask_logits), torch.cat(mask_gts), cfg.dice_eps).sum()
        loss_mask = loss_mask / num_mask_avg
    else:  # keep every parameter in the graph (DDP) with a zero contribution
        loss_mask = (outputs.mask_feat.sum() + kernels.sum()) * 0.0
    total = loss_cls + loss_bbox + loss_mask
    out: dict[str, Any] = {
        "loss": total,
        "loss_cls": loss_cls.detach(),
        "loss_bbox": loss_bbox.detach(),
        "loss_mask": loss_mask.detach(),
        "num_pos": torch.tensor(float(sum(p.shape[0] for p in pos_pred)), device=device),
    }
    if return_assignments:
        out["assignments"] = assignments
    return out


def targets_to_device(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Tensor]]:
    """Move a list of per-image target dicts to ``device``."""
    return [
        {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in targets
    ]
