"""Training losses of both stages (CartoonSegmentation, arXiv 2312.01943, §4.1-4.2, eqs. 1-7).

Stage 1 (RTMDet-Ins; the mmdet 3.x defaults the paper uses):

* :func:`quality_focal_loss`: Quality Focal Loss (Li et al., "Generalized Focal Loss", NeurIPS 2020) with
  sigmoid activation and beta = 2, whose positive target is the IoU of the assigned box (soft label);
* :func:`giou_loss`: 1 - GIoU (Rezatofighi et al., CVPR 2019), eps 1e-6;
* :func:`dice_loss`: 1 - 2 sum(p g) / (sum(p^2) + eps + sum(g^2) + eps) per instance with eps = 5e-6
  (mmdet ``DiceLoss(naive_dice=False)``).

Stage 2 (IS-Net refiner):

* :func:`structure_loss`: the pixel-position-aware loss of F3Net (Wei et al., AAAI 2020) as CartoonSegmentation
  uses it: weights ``1 + 5 |avgpool15(M) - M|`` (kernel 15, stride 1, padding 7), weighted BCE + weighted IoU;
* :func:`feature_mse`: intermediate supervision, the sum over levels of mean-reduced MSE;
* :func:`refiner_loss` / :func:`gt_encoder_loss`: the level-weighted totals (weight 5 on d1, the
  full-resolution final output, as in the released code; see pipeline_spec §0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..boxes import box_iou as box_iou_pairwise  # the one pairwise box IoU; its old name here

__all__ = [
    "box_iou_aligned",
    "box_iou_pairwise",
    "dice_loss",
    "feature_mse",
    "giou_loss",
    "gt_encoder_loss",
    "quality_focal_loss",
    "refiner_loss",
    "structure_loss",
]


def box_iou_aligned(a: Tensor, b: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(IoU, GIoU) ``[N]`` of aligned xyxy box pairs ``a [N,4]``, ``b [N,4]``."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = (area_a + area_b - inter).clamp(min=eps)
    iou = inter / union
    elt = torch.minimum(a[:, :2], b[:, :2])
    erb = torch.maximum(a[:, 2:], b[:, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = (ewh[:, 0] * ewh[:, 1]).clamp(min=eps)
    return iou, iou - (enclose - union) / enclose


def quality_focal_loss(logits: Tensor, labels: Tensor, scores: Tensor, beta: float = 2.0) -> Tensor:
    """Per-prior Quality Focal Loss, summed over classes.

    Args:
        logits: ``[N,C]`` classification logits.
        labels: ``[N]`` int64 target class, ``C`` (= num_classes) for background.
        scores: ``[N]`` soft target of the positive class (IoU with the assigned box); ignored for background.
        beta: focusing exponent (2 in the paper).

    Returns:
        ``[N]`` loss per prior (unreduced): negatives pay ``BCE(x, 0) * sigmoid(x)^beta`` on every class, a
        positive pays ``BCE(x, s) * |s - sigmoid(x)|^beta`` on its class instead.
    """
    logits = logits.float()
    prob = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * prob.pow(beta)
    num_classes = logits.shape[1]
    pos = ((labels >= 0) & (labels < num_classes)).nonzero().flatten()
    if pos.numel():
        cls = labels[pos]
        s = scores[pos].to(logits.dtype)
        x = logits[pos, cls]
        pos_loss = F.binary_cross_entropy_with_logits(x, s, reduction="none") * (s - prob[pos, cls]).abs().pow(beta)
        loss = loss.index_put((pos, cls), pos_loss)
    return loss.sum(1)


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """``1 - GIoU`` per aligned pair of xyxy boxes ``[N,4]`` -> ``[N]`` (unreduced)."""
    _, giou = box_iou_aligned(pred.float(), target.float(), eps)
    return 1.0 - giou


def dice_loss(logits: Tensor, target: Tensor, eps: float = 5e-6) -> Tensor:
    """Dice loss per instance (mmdet ``DiceLoss(use_sigmoid=True, naive_dice=False, eps=5e-6)``).

    Args:
        logits: ``[N,H,W]`` (or ``[N,*]``) mask logits.
        target: same shape, 0/1 (or soft) ground truth.

    Returns:
        ``[N]``: ``1 - 2 sum(p g) / ((sum(p^2) + eps) + (sum(g^2) + eps))`` with ``p = sigmoid(logits)``.
    """
    p = logits.float().sigmoid().flatten(1)
    g = target.float().flatten(1)
    a = (p * g).sum(1)
    b = (p * p).sum(1) + eps
    c = (g * g).sum(1) + eps
    return 1.0 - 2.0 * a / (b + c)


def structure_loss(logits: Tensor, mask: Tensor, kernel: int = 15, edge_weight: float = 5.0) -> Tensor:
    """Pixel-position-aware (structure) loss of one side output, averaged over the batch.

    Args:
        logits: ``[B,1,H,W]`` side-output logits.
        mask: ``[B,1,H,W]`` ground truth in [0,1].
        kernel: average-pool kernel of the boundary weight (15 with padding 7, as in the released code).
        edge_weight: factor of ``|avgpool(M) - M|`` in ``W = 1 + edge_weight * |avgpool(M) - M|``.

    Returns:
        scalar ``mean_b(wBCE_b + wIoU_b)`` with ``wBCE = sum(W * bce) / sum(W)`` and
        ``wIoU = 1 - (sum(W p M) + 1) / (sum(W (p + M)) - sum(W p M) + 1)``.
    """
    logits = logits.float()
    mask = mask.float()
    weight = 1.0 + edge_weight * (F.avg_pool2d(mask, kernel, stride=1, padding=kernel // 2) - mask).abs()
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weight * bce).sum((2, 3)) / weight.sum((2, 3))
    p = logits.sigmoid()
    inter = (p * mask * weight).sum((2, 3))
    union = ((p + mask) * weight).sum((2, 3))
    wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
    return (wbce + wiou).mean()


def feature_mse(pred_features: Sequence[Tensor], target_features: Sequence[Tensor]) -> Tensor:
    """Intermediate supervision: ``sum_i mean((f_i - t_i)^2)`` over the feature levels (targets detached)."""
    if len(pred_features) != len(target_features):
        raise ValueError(f"feature_mse got {len(pred_features)} predicted and {len(target_features)} target levels")
    total = pred_features[0].new_zeros((), dtype=torch.float32)
    for f, t in zip(pred_features, target_features):
        if f.shape != t.shape:
            raise ValueError(f"feature shapes differ: {tuple(f.shape)} vs {tuple(t.shape)}")
        total = total + F.mse_loss(f.float(), t.detach().float())
    return total


def refiner_loss(
    side_logits: Sequence[Tensor],
    mask: Tensor,
    features: Sequence[Tensor] | None = None,
    gt_features: Sequence[Tensor] | None = None,
    level_weights: Sequence[float] = (5.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    use_ppa: bool = True,
) -> dict[str, Tensor]:
    """Stage-2 loss (Paper eq. 7): ``L_ppa + L_IS``.

    Args:
        side_logits: ``[d1..d6]``, each ``[B,1,H,W]`` at the input size (d1 = final output).
        mask: ``[B,1,H,W]`` ground truth.
        features: the refiner's ``[hx1d..hx5d, hx6]``; with ``gt_features`` (the frozen GT encoder's features
            of ``mask``) adds the intermediate supervision ``L_IS``.
        level_weights: weights of the six side outputs (5 on d1 by default).
        use_ppa: ``False`` replaces the structure loss by plain BCE (the paper's "w/o L_ppa" ablation).

    Returns:
        dict with ``loss`` (total), ``loss_ppa`` (or plain BCE), ``loss_is`` (0 when not used) and ``loss_d1``.
    """
    if len(side_logits) != len(level_weights):
        raise ValueError(f"{len(side_logits)} side outputs but {len(level_weights)} level weights")
    terms = []
    for logit in side_logits:
        if use_ppa:
            terms.append(structure_loss(logit, mask))
        else:
            terms.append(F.binary_cross_entropy_with_logits(logit.float(), mask.float()))
    ppa = sum(w * t for w, t in zip(level_weights, terms))
    if features is not None and gt_features is not None:
        inter = feature_mse(features, gt_features)
    else:
        inter = ppa.new_zeros(())
    return {"loss": ppa + inter, "loss_ppa": ppa, "loss_is": inter, "loss_d1": terms[0].detach()}


def gt_encoder_loss(side_logits: Sequence[Tensor], mask: Tensor) -> dict[str, Tensor]:
    """GT-encoder (mask auto-encoder) pretraining loss: structure loss on every side output, weights all 1."""
    terms = [structure_loss(logit, mask) for logit in side_logits]
    total = sum(terms)
    return {"loss": total, "loss_d1": terms[0].detach()}
