"""Dynamic soft label assignment (RTMDet, Lyu et al. 2022, §3.2 "Dynamic soft label assignment").

Written from the paper's description and the behaviour of mmdet's ``DynamicSoftLabelAssigner`` with the
RTMDet defaults (``soft_center_radius=3``, ``topk=13``, ``iou_weight=3``):

1. candidates are priors whose point lies strictly inside some ground-truth box;
2. cost[p, g] = soft classification cost + IoU cost + soft centre prior, where
   * soft classification cost = ``sum_c BCE(logit_pc, y_gc * IoU_pg) * |y_gc * IoU_pg - sigmoid(logit_pc)|^2``,
   * IoU cost = ``-3 log(IoU_pg + 1e-7)`` between the (detached) decoded prediction and the ground truth,
   * soft centre prior = ``10^(|prior - centre_g| / stride - 3)``, where ``centre_g`` is the centre of mass of
     the ground-truth mask in pixel-index coordinates (mmdet's ``center_of_mass``: RTMDet-Ins ground truths
     carry masks; box-only instances carry their filled box) and the box centre only without masks;
3. dynamic k (SimOTA): each ground truth takes its ``k_g = max(1, int(sum of its top-13 IoUs))`` cheapest
   candidates; a prior claimed by several ground truths keeps only the cheapest.

The output per prior is the assigned ground-truth index (-1 = background) and the IoU of the assigned pair,
which is the soft classification target and the box-loss weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..boxes import box_iou

__all__ = ["AssignResult", "DynamicSoftLabelAssigner", "mask_centers"]

_EPS = 1e-7


def mask_centers(masks: Tensor, eps: float = _EPS) -> Tensor:
    """Centres of mass ``[G,2]`` (x, y) of masks ``[G,H,W]`` in pixel-index coordinates (pixel ``(0, 0)`` is at
    ``(0, 0)``); an empty mask gives ``(0, 0)``. Integer sums, then one float32 division (mmdet's
    ``center_of_mass``)."""
    _, h, w = masks.shape
    m = masks.bool()
    rows = m.sum(dim=2)  # [G,H] int64 (exact: the weighted sums below equal mmdet's full-grid ones)
    cols = m.sum(dim=1)  # [G,W]
    norm = rows.sum(dim=1).float().clamp(min=eps)
    cy = (rows * torch.arange(h, device=masks.device)).sum(dim=1) / norm
    cx = (cols * torch.arange(w, device=masks.device)).sum(dim=1) / norm
    return torch.stack([cx, cy], dim=1)


@dataclass
class AssignResult:
    """Assignment of one image.

    Attributes:
        gt_inds: ``[P]`` int64 assigned ground-truth index, -1 for background.
        ious: ``[P]`` float IoU of (prediction, assigned ground truth); 0 for background.
        labels: ``[P]`` int64 class of the assigned ground truth, ``num_classes`` for background.
    """

    gt_inds: Tensor
    ious: Tensor
    labels: Tensor

    @property
    def pos_mask(self) -> Tensor:
        return self.gt_inds >= 0


@dataclass(frozen=True)
class DynamicSoftLabelAssigner:
    """Callable assigner (see the module docstring).

    Attributes:
        soft_center_radius: alpha of the centre prior ``10^(d - alpha)``.
        topk: candidates summed to get each ground truth's dynamic k.
        iou_weight: weight of the ``-log IoU`` cost.
    """

    soft_center_radius: float = 3.0
    topk: int = 13
    iou_weight: float = 3.0

    @torch.no_grad()
    def __call__(
        self,
        cls_logits: Tensor,
        decoded_boxes: Tensor,
        priors: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_centers: Tensor | None = None,
    ) -> AssignResult:
        """Assign the priors of one image.

        Args:
            cls_logits: ``[P,C]`` classification logits.
            decoded_boxes: ``[P,4]`` predicted xyxy boxes (input pixels).
            priors: ``[P,4]`` ``(x, y, stride_x, stride_y)`` prior points (cell corners, offset 0).
            gt_boxes: ``[G,4]`` xyxy ground-truth boxes.
            gt_labels: ``[G]`` int64 classes in ``[0, C)``.
            gt_centers: ``[G,2]`` (x, y) centres for the centre prior (see :func:`mask_centers`); None = box
                centres.

        Returns:
            :class:`AssignResult`.
        """
        num_priors, num_classes = cls_logits.shape
        device = cls_logits.device
        gt_inds = torch.full((num_priors,), -1, dtype=torch.long, device=device)
        ious_out = torch.zeros(num_priors, dtype=torch.float32, device=device)
        labels = torch.full((num_priors,), num_classes, dtype=torch.long, device=device)
        num_gt = gt_boxes.shape[0]
        if num_gt == 0 or num_priors == 0:
            return AssignResult(gt_inds, ious_out, labels)
        gt_boxes = gt_boxes.float()
        points = priors[:, :2].float()
        deltas = torch.cat([points[:, None] - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - points[:, None]], -1)
        inside = deltas.amin(-1) > 0  # [P,G]
        valid = inside.any(1)
        if not bool(valid.any()):
            return AssignResult(gt_inds, ious_out, labels)
        v_idx = valid.nonzero().flatten()
        v_boxes = decoded_boxes[v_idx].float()
        v_logits = cls_logits[v_idx].float()
        v_priors = priors[v_idx].float()
        num_valid = v_idx.numel()

        centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2 if gt_centers is None else gt_centers.float()
        dist = (v_priors[:, None, :2] - centres[None]).pow(2).sum(-1).sqrt() / v_priors[:, 2:3]
        centre_cost = torch.pow(10.0, dist - self.soft_center_radius)

        ious = box_iou(v_boxes, gt_boxes)  # [V,G]
        iou_cost = -torch.log(ious + _EPS) * self.iou_weight

        onehot = F.one_hot(gt_labels.long(), num_classes).float()  # [G,C]
        soft_label = onehot[None] * ious[..., None]  # [V,G,C]
        logits = v_logits[:, None].expand(num_valid, num_gt, num_classes)
        scale = (soft_label - logits.sigmoid()).abs().pow(2.0)
        cls_cost = (F.binary_cross_entropy_with_logits(logits, soft_label, reduction="none") * scale).sum(-1)

        # as in mmdet, a candidate (inside *some* box) may be matched to any ground truth; the centre prior
        # makes far-away pairs prohibitively expensive
        cost = cls_cost + iou_cost + centre_cost

        matched_gt, matched_iou, keep = self._dynamic_k(cost, ious)
        pos = v_idx[keep]
        gt_inds[pos] = matched_gt
        ious_out[pos] = matched_iou
        labels[pos] = gt_labels[matched_gt].long()
        return AssignResult(gt_inds, ious_out, labels)

    def _dynamic_k(self, cost: Tensor, ious: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        num_valid, num_gt = cost.shape
        matching = torch.zeros_like(cost, dtype=torch.bool)
        k = min(self.topk, num_valid)
        top_ious = ious.topk(k, dim=0).values
        dynamic_ks = top_ious.sum(0).int().clamp(min=1)
        for g in range(num_gt):
            idx = cost[:, g].topk(int(dynamic_ks[g]), largest=False).indices
            matching[idx, g] = True
        multi = matching.sum(1) > 1
        if bool(multi.any()):
            best = cost[multi].argmin(1)
            matching[multi] = False
            matching[multi.nonzero().flatten(), best] = True
        keep = matching.any(1)
        matched_gt = matching[keep].float().argmax(1)
        matched_iou = (matching.float() * ious).sum(1)[keep]
        return matched_gt, matched_iou, keep
