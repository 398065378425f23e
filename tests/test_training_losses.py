"""Stage-1/2 losses and the dynamic soft label assigner against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cartoonseg.training.assigner import DynamicSoftLabelAssigner
from cartoonseg.training.losses import (
    dice_loss,
    feature_mse,
    giou_loss,
    gt_encoder_loss,
    quality_focal_loss,
    refiner_loss,
    structure_loss,
)

LN2 = math.log(2.0)


def test_quality_focal_loss_hand_values():
    logits = torch.zeros(3, 2)
    labels = torch.tensor([0, 1, 2])  # 2 = background (num_classes)
    scores = torch.tensor([0.5, 1.0, 0.0])
    loss = quality_focal_loss(logits, labels, scores, beta=2.0)
    # p = 0.5 everywhere. negatives: ln2 * 0.5^2 per class.
    neg = LN2 * 0.25
    # prior 0: class 0 positive with target 0.5: BCE(0, .5) = ln2, |0.5 - 0.5|^2 = 0 -> 0; class 1 negative
    # prior 1: class 1 positive with target 1: BCE(0, 1) = ln2, |1 - 0.5|^2 = 0.25
    expected = torch.tensor([neg, neg + LN2 * 0.25, 2 * neg])
    torch.testing.assert_close(loss, expected)
    # confident correct prediction -> ~0; confident wrong background -> large
    assert quality_focal_loss(torch.tensor([[-20.0]]), torch.tensor([1]), torch.tensor([0.0])).item() < 1e-12
    assert quality_focal_loss(torch.tensor([[5.0]]), torch.tensor([1]), torch.tensor([0.0])).item() > 4.0


def test_giou_loss_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 3.0, 1.0], [1.0, 0.0, 3.0, 2.0]])
    loss = giou_loss(a, b)
    # identical -> 0; disjoint: IoU 0, enclose 3, union 2 -> GIoU = -1/3; half overlap: IoU 2/6, enclose = union
    torch.testing.assert_close(loss, torch.tensor([0.0, 4.0 / 3.0, 1.0 - 1.0 / 3.0]), atol=1e-6, rtol=0)


def test_dice_loss_hand_values():
    target = torch.zeros(2, 4, 4)
    target[:, :2] = 1  # 8 positive pixels
    logits = torch.where(target > 0, 30.0, -30.0)
    logits[1] = 0.0  # p = 0.5 everywhere
    loss = dice_loss(logits, target, eps=5e-6)
    eps = 5e-6
    perfect = 1 - 2 * 8 / ((8 + eps) + (8 + eps))
    half = 1 - 2 * (0.5 * 8) / ((16 * 0.25 + eps) + (8 + eps))
    torch.testing.assert_close(loss, torch.tensor([perfect, half]), atol=1e-6, rtol=0)


def _structure_reference(logit, mask):
    pooled = F.avg_pool2d(mask, 15, 1, 7)  # zero padding counted (count_include_pad)
    w = 1 + 5 * (pooled - mask).abs()
    bce = -(mask * F.logsigmoid(logit) + (1 - mask) * F.logsigmoid(-logit))
    wbce = (w * bce).sum((2, 3)) / w.sum((2, 3))
    p = torch.sigmoid(logit)
    inter = (p * mask * w).sum((2, 3))
    union = ((p + mask) * w).sum((2, 3))
    return (wbce + 1 - (inter + 1) / (union - inter + 1)).mean()


def test_structure_loss_weights_and_value():
    torch.manual_seed(0)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    logit = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(structure_loss(logit, mask), _structure_reference(logit, mask))
    # a uniform interior far from the edges has weight 1: a constant mask with a perfect prediction costs ~0
    empty = torch.zeros(1, 1, 32, 32)
    assert structure_loss(torch.full((1, 1, 32, 32), -40.0), empty).item() < 1e-6
    # an error on the boundary costs more than the same error in the flat background (the PPA weighting)
    edge = torch.where(mask > 0, 30.0, -30.0)
    e1, e2 = edge.clone(), edge.clone()
    e1[:, :, 7, 8:24] = 30.0  # wrong row just outside the edge
    e2[:, :, 0, 8:24] = 30.0  # wrong row far from it
    assert structure_loss(e1, mask) > structure_loss(e2, mask)


def test_refiner_loss_level_weights_and_feature_mse():
    torch.manual_seed(1)
    mask = (torch.rand(2, 1, 16, 16) > 0.5).float()
    sides = [torch.randn(2, 1, 16, 16) for _ in range(6)]
    feats = [torch.randn(2, 4, 8 >> min(i, 2), 8 >> min(i, 2)) for i in range(6)]
    targets = [f + 0.5 for f in feats]
    out = refiner_loss(sides, mask, feats, targets)
    s = [structure_loss(x, mask) for x in sides]
    torch.testing.assert_close(out["loss_ppa"], 5 * s[0] + sum(s[1:]))
    torch.testing.assert_close(out["loss_is"], torch.tensor(6 * 0.25))  # each MSE is 0.5^2
    torch.testing.assert_close(out["loss"], out["loss_ppa"] + out["loss_is"])
    assert feature_mse(feats, feats).item() == 0.0
    assert refiner_loss(sides, mask)["loss_is"].item() == 0.0
    torch.testing.assert_close(gt_encoder_loss(sides, mask)["loss"], sum(s))
    with pytest.raises(ValueError):
        feature_mse(feats, targets[:5])


# ----------------------------------------------------------------------------------------------- assigner
def _priors(size=64, stride=8):
    ys, xs = torch.meshgrid(torch.arange(0, size, stride).float(), torch.arange(0, size, stride).float(), indexing="ij")
    return torch.stack(
        [xs.flatten(), ys.flatten(), torch.full_like(xs.flatten(), stride), torch.full_like(xs.flatten(), stride)], 1
    )


def test_assigner_dynamic_k_equals_summed_topk_ious():
    priors = _priors()  # 64 priors on an 8x8 grid
    gt = torch.tensor([[4.0, 4.0, 44.0, 44.0]])  # prior points strictly inside: x, y in {8..40} -> 25 candidates
    decoded = gt.expand(len(priors), 4).clone()  # every prediction equals the box: IoU 1 -> k = 13
    res = DynamicSoftLabelAssigner()(torch.zeros(len(priors), 1), decoded, priors, gt, torch.tensor([0]))
    pos = res.pos_mask
    assert int(pos.sum()) == 13
    assert (res.gt_inds[pos] == 0).all() and (res.gt_inds[~pos] == -1).all()
    torch.testing.assert_close(res.ious[pos], torch.ones(13))
    assert (res.labels[~pos] == 1).all() and (res.labels[pos] == 0).all()
    p = priors[pos, :2]
    assert ((p > 4) & (p < 44)).all()  # all inside the box
    # the 13 cheapest are the ones nearest the centre (24, 24): the centre prior dominates the cost
    d = ((p - 24) ** 2).sum(1).sqrt() / 8
    d_all = ((priors[:, :2] - 24) ** 2).sum(1).sqrt() / 8
    inside = ((priors[:, :2] > 4) & (priors[:, :2] < 44)).all(1)
    assert d.max() <= d_all[inside & ~pos].min() + 1e-6


def test_assigner_small_iou_gives_k_one_and_two_boxes_split():
    priors = _priors()
    gts = torch.tensor([[1.0, 1.0, 20.0, 20.0], [30.0, 30.0, 60.0, 60.0]])
    decoded = torch.tensor([[0.0, 0.0, 2.0, 2.0]]).expand(len(priors), 4).clone()  # tiny IoU -> k = 1 each
    res = DynamicSoftLabelAssigner()(torch.zeros(len(priors), 1), decoded, priors, gts, torch.tensor([0, 0]))
    assert int(res.pos_mask.sum()) == 2
    assigned = res.gt_inds[res.pos_mask].sort().values
    assert assigned.tolist() == [0, 1]


def test_assigner_prior_claimed_twice_goes_to_cheaper_gt():
    priors = torch.tensor([[16.0, 16.0, 8.0, 8.0]])
    gts = torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.0, 10.0, 60.0, 60.0]])  # prior inside both
    decoded = torch.tensor([[0.0, 0.0, 32.0, 32.0]])  # IoU 1 with gt 0, low with gt 1
    res = DynamicSoftLabelAssigner()(torch.zeros(1, 1), decoded, priors, gts, torch.tensor([0, 0]))
    assert res.gt_inds.tolist() == [0]
    assert res.ious.item() == pytest.approx(1.0)


def test_assigner_without_gt_or_candidates_is_all_background():
    priors = _priors()
    a = DynamicSoftLabelAssigner()
    res = a(
        torch.zeros(len(priors), 1),
        torch.zeros(len(priors), 4),
        priors,
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
    )
    assert not res.pos_mask.any() and (res.labels == 1).all()
    far = torch.tensor([[100.0, 100.0, 120.0, 120.0]])
    res = a(torch.zeros(len(priors), 1), torch.zeros(len(priors), 4), priors, far, torch.tensor([0]))
    assert not res.pos_mask.any()
