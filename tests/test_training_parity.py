"""Training-loss parity with the original implementations.

The golden files in ``tests/data/`` come from ``tools/make_training_golden.py`` (mmdet 3.3.0 / mmcv 2.1.0 /
mmengine 0.10.5 with CartoonSegmentation's ``RTMDetInsSepBNHeadCustom``, and the original ``isnet.py`` loss
functions; versions in the JSON files). Every input was rounded to float16 before the reference saw it, so both
sides start from the same float32 numbers.

Tolerance: 1e-5 relative (+1e-7 absolute) on losses, the same on gradients relative to their largest entry.
Both sides compute the same float32 sums in possibly different orders (and with different BLAS/oneDNN kernels
on AVX2 / AVX-512 and any thread count); that reorders roundings at ~1e-7 relative, two decades below the
tolerance. Discrete outputs (assignments, labels) must match exactly: the crafted outputs keep every decision
margin far above float noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cartoonseg.training.losses import gt_encoder_loss, refiner_loss, structure_loss

DATA = Path(__file__).parent / "data"
RTOL, ATOL = 1e-5, 1e-7


def close(actual: float | torch.Tensor, expected: float, name: str) -> None:
    a = float(actual.detach()) if isinstance(actual, torch.Tensor) else float(actual)
    assert abs(a - expected) <= RTOL * abs(expected) + ATOL, f"{name}: {a!r} vs reference {expected!r}"


def close_array(actual: torch.Tensor, expected: np.ndarray, name: str) -> None:
    a = actual.detach().double().numpy()
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} vs {e.shape}"
    err = float(np.abs(a - e).max()) if a.size else 0.0
    scale = float(np.abs(e).max()) if e.size else 0.0
    assert err <= RTOL * scale + ATOL, f"{name}: max|x - ref| = {err:.3g} (max|ref| = {scale:.3g})"


# ------------------------------------------------------------------------------------------------ refiner
@pytest.fixture(scope="module")
def refiner_golden():
    rec = json.loads((DATA / "training_golden_refiner.json").read_text())
    arrays = dict(np.load(DATA / "training_golden_refiner.npz"))
    return rec, arrays


@pytest.mark.parametrize("target", ["binary", "soft"])
def test_refiner_losses_match_original_isnet(refiner_golden, target):
    rec, arr = refiner_golden
    ref = rec[target]
    mask = torch.from_numpy(arr[f"mask_{target}"])
    sides = [torch.from_numpy(arr[f"side{i}"]).float().requires_grad_() for i in range(1, 7)]
    feats = [torch.from_numpy(arr[f"feat{i}"]).float().requires_grad_() for i in range(1, 7)]
    gt_feats = [torch.from_numpy(arr[f"gt_feat{i}"]).float() for i in range(1, 7)]

    for i, expected in enumerate(ref["structure_loss_levels"]):
        close(structure_loss(sides[i], mask), expected, f"structure_loss d{i + 1}")

    enc = gt_encoder_loss(sides, mask)
    close(enc["loss"], ref["gt_encoder_loss"], "GT-encoder loss")
    close(enc["loss_d1"], ref["gt_encoder_loss0"], "GT-encoder d1 term")

    plain = refiner_loss(sides, mask)
    close(plain["loss"], ref["refiner_no_is_loss"], "refiner loss without L_IS")
    close(5.0 * plain["loss_d1"], ref["refiner_no_is_loss0"], "5 x d1 term")
    assert float(plain["loss_is"]) == 0.0

    full = refiner_loss(sides, mask, feats, gt_feats)
    close(full["loss"], ref["refiner_loss"], "refiner loss L_ppa + L_IS")
    full["loss"].backward()
    close_array(sides[0].grad, arr[f"{target}.grad.d1"], "dL/dd1")
    close_array(sides[5].grad, arr[f"{target}.grad.d6"], "dL/dd6")
    close_array(feats[0].grad, arr[f"{target}.grad.feat1"], "dL/dfeat1")
    close_array(feats[5].grad, arr[f"{target}.grad.feat6"], "dL/dfeat6")


# ------------------------------------------------------------------------------------------------ detector
@pytest.fixture(scope="module")
def detector_golden():
    rec = json.loads((DATA / "training_golden_detector.json").read_text())
    arrays = dict(np.load(DATA / "training_golden_detector.npz"))
    return rec, arrays


def _targets(arr, case, num_classes):
    targets = []
    for i in range(4):
        labels = torch.from_numpy(arr[f"img{i}.labels"]).long()
        ignore = torch.from_numpy(arr[f"img{i}.ignore_mask"]).bool()
        boxes = torch.from_numpy(arr[f"img{i}.boxes"]).float()
        masks = torch.from_numpy(arr[f"img{i}.masks"])
        if num_classes == 1:
            labels = torch.zeros_like(labels)
        if case == "crafted_nogt":
            labels, ignore, boxes, masks = labels[:0], ignore[:0], boxes[:0], masks[:0]
        if case == "crafted_allignore":
            ignore = torch.ones_like(ignore)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks, "ignore_mask": ignore})
    return targets


def _head_outputs(arr, case):
    from cartoonseg.models.rtmdet_ins import HeadOutputs

    src = "crafted" if case.startswith("crafted") else case
    leaf = lambda a: torch.from_numpy(a).float().requires_grad_()
    return HeadOutputs(
        cls_scores=[leaf(arr[f"{src}.out.cls.{lv}"]) for lv in range(3)],
        bbox_preds=[leaf(arr[f"{src}.out.bbox.{lv}"]) for lv in range(3)],
        kernel_preds=[leaf(arr[f"{src}.out.kernel.{lv}"]) for lv in range(3)],
        mask_feat=leaf(arr[f"{src}.out.mask_feat"]),
    )


def _detector(num_classes):
    from cartoonseg.build import build_detector
    from cartoonseg.config import detector_config

    return build_detector(detector_config("tiny", num_classes=num_classes))


@pytest.mark.parametrize("case", ["crafted", "crafted_nogt", "crafted_allignore", "forward"])
def test_detector_loss_assignment_and_gradients_match_mmdet(detector_golden, case):
    from cartoonseg.training.rtmdet_loss import rtmdet_ins_loss

    rec, arr = detector_golden
    ref = rec["cases"][case]
    outputs = _head_outputs(arr, case)
    targets = _targets(arr, case, ref["num_classes"])
    losses = rtmdet_ins_loss(_detector(ref["num_classes"]), outputs, targets, return_assignments=True)

    # assignment and targets, image by image (mmdet: 0 = background, k = ground truth k-1)
    for i, res in enumerate(losses["assignments"]):
        expected_inds = arr[f"{case}.img{i}.assigned_gt_inds"] - 1
        np.testing.assert_array_equal(res.gt_inds.numpy(), expected_inds, err_msg=f"image {i} matches")
        np.testing.assert_array_equal(res.labels.numpy(), arr[f"{case}.img{i}.labels"], err_msg=f"image {i} labels")
        close_array(res.ious, arr[f"{case}.img{i}.assign_metrics"], f"image {i} soft targets (IoU)")
        pos = arr[f"{case}.img{i}.pos_inds"]
        np.testing.assert_array_equal(np.flatnonzero(res.gt_inds.numpy() >= 0), np.sort(pos))
        if len(pos):
            boxes = targets[i]["boxes"][res.gt_inds[torch.from_numpy(pos)]]
            close_array(boxes, arr[f"{case}.img{i}.pos_bbox_targets"], f"image {i} box targets")
    assert float(losses["num_pos"]) == ref["num_pos"]

    close(losses["loss_cls"], ref["loss_cls"], "loss_cls (QFL)")
    close(losses["loss_bbox"], ref["loss_bbox"], "loss_bbox (GIoU)")
    close(losses["loss_mask"], ref["loss_mask"], "loss_mask (Dice)")
    close(losses["loss"], ref["loss"], "total loss")

    losses["loss"].backward()
    for name, tensors in (("cls", outputs.cls_scores), ("bbox", outputs.bbox_preds), ("kernel", outputs.kernel_preds)):
        for level, t in enumerate(tensors):
            grad = t.grad if t.grad is not None else torch.zeros_like(t)
            close_array(grad, arr[f"{case}.grad.{name}.{level}"], f"d loss / d {name}[{level}]")
    grad = outputs.mask_feat.grad if outputs.mask_feat.grad is not None else torch.zeros_like(outputs.mask_feat)
    close_array(grad, arr[f"{case}.grad.mask_feat"], "d loss / d mask_feat")


def test_detector_training_forward_and_loss_match_mmdet_end_to_end(detector_golden, reference):
    """Our training-mode forward (batch-statistics BN) of the tiny golden network, then our loss, against
    ``RTMDet.loss``. Head outputs first (to the float16 rounding of the stored copy), then the losses, which
    inherit the forward's float32 noise (golden_reference.md §4: ~1e-5 of the range), hence 1e-4."""
    import cartoonseg
    from cartoonseg.training.rtmdet_loss import rtmdet_ins_loss

    rec, arr = detector_golden
    model = cartoonseg.load_detector(reference / "rtmdet_ins_tiny_golden_weights.safetensors").train()
    x = torch.from_numpy(np.stack([arr[f"img{i}.image_bgr"] for i in range(4)])).permute(0, 3, 1, 2)
    with torch.no_grad():
        outputs = model(model.normalize(x))
        for lv in range(3):
            for name, t in (("cls", outputs.cls_scores[lv]), ("bbox", outputs.bbox_preds[lv])):
                ref = torch.from_numpy(arr[f"forward.out.{name}.{lv}"]).float()
                err = (t - ref).abs().max().item()
                assert err <= 1e-3 * ref.abs().max().item() + 1e-3, f"{name}[{lv}] differs by {err}"
        losses = rtmdet_ins_loss(model, outputs, _targets(arr, "forward", 1))
    for key in ("loss_cls", "loss_bbox", "loss_mask"):
        expected = rec["e2e"][key]
        assert abs(float(losses[key]) - expected) <= 1e-4 * abs(expected), f"{key}: {float(losses[key])} vs {expected}"


# ------------------------------------------------------------------------------------------------ recipes
def test_tiny_cpu_recipe_from_the_command_line(tmp_path):
    from cartoonseg.training.detector import DETECTOR_RECIPES, DetectorTrainConfig
    from cartoonseg.training.toy import make_toy_coco
    from train.train_detector import config_from_args

    make_toy_coco(tmp_path / "data", num_images=2, size=64, seed=0)
    base = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    cfg = config_from_args([*base, "--preset", "tiny-cpu"])
    for key, value in DETECTOR_RECIPES["tiny-cpu"].items():
        assert getattr(cfg, key) == value, key
    cfg = config_from_args([*base, "--preset", "tiny-cpu", "--lr", "0.001", "--workers", "0", "--img-size", "128"])
    assert (cfg.lr, cfg.num_workers, cfg.img_size, cfg.preset, cfg.mosaic) == (0.001, 0, 128, "tiny", False)
    paper = config_from_args(base)  # the paper defaults are the dataclass defaults
    defaults = DetectorTrainConfig(train_ann=paper.train_ann, out_dir=paper.out_dir)
    assert paper == defaults
