"""Golden parity of the RTMDet-Ins implementation against the real mmdet 3.3 / mmcv 2.1 outputs
(``../shared/reference/rtmdet_ins_tiny_golden_*``), with the tolerances of golden_reference.md §4 made robust to
the CPU's fp32 kernel choice: large logits are compared relative to the accumulated magnitude of their inputs and a
mask pixel may differ only where the reference logit is within that rounding band of the threshold (criteria in
``tests/_numerics.py``). They hold on AVX2 and AVX-512 CPUs and any thread count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _numerics import (
    FP16_ROUNDING,
    accumulated_magnitude_dynamic,
    assert_close,
    assert_close_accumulated,
    assert_decisions_match,
    logit_band,
    sigmoid_band,
    upsample_mask_logits,
)

import cartoonseg
from cartoonseg.transforms import letterbox

MEAN = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
STD = torch.tensor([57.375, 57.12, 58.395]).view(3, 1, 1)
SCALE_A = (1.3333333333333333, 1.334375)  # letterbox scale factor of input A (320x480 -> 640)


@pytest.fixture(scope="module")
def golden(reference):
    return load_file(str(reference / "rtmdet_ins_tiny_golden_outputs.safetensors"))


@pytest.fixture(scope="module")
def golden_masks(reference):
    return np.load(reference / "rtmdet_ins_tiny_golden_masks.npz")


@pytest.fixture(scope="module")
def detector(reference):
    # A plain mmdet-layout safetensors (546 keys incl. aliases): sized from the tensor shapes alone.
    return cartoonseg.load_detector(reference / "rtmdet_ins_tiny_golden_weights.safetensors")


def test_tiny_config_inferred_from_shapes(detector):
    assert detector.config == cartoonseg.DETECTOR_PRESETS["tiny"]
    assert detector.config.num_dynamic_params == 169


def test_letterbox_matches_pipeline_bytes(golden):
    canvas, geom = letterbox(golden["image_bgr_uint8"].numpy(), 640)
    assert geom.scale_factor == (1.3333333333333333, 1.334375)
    assert geom.img_shape == (640, 640) and geom.ori_shape == (320, 480)
    assert torch.equal(canvas.to(torch.uint8), golden["pipeline.inputs_uint8_bgr"])


@pytest.fixture(scope="module")
def run_a(detector, golden):
    x = ((golden["pipeline.inputs_uint8_bgr"].float() - MEAN) / STD)[None]
    with torch.no_grad():
        feats = detector.backbone(x)
        neck = detector.neck(feats)
        head = detector.bbox_head(neck)
        dets = detector.postprocess(head, 0, img_shape=(640, 640), ori_shape=(320, 480), scale_factor=SCALE_A)
    return feats, neck, head, dets


def test_network_input_hash(golden):
    import hashlib

    x = ((golden["pipeline.inputs_uint8_bgr"].float() - MEAN) / STD)[None]
    assert hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16] == "e05803e79d7e008f"


def test_backbone_neck_head_outputs(run_a, golden):
    feats, neck, head, _ = run_a
    for level in range(3):
        assert_close(feats[level], golden[f"backbone.out{level}"], f"backbone.out{level}")
        assert_close(neck[level], golden[f"neck.out{level}"], f"neck.out{level}")
        assert_close(head.cls_scores[level], golden[f"head.cls_score.{level}"], f"cls_score.{level}")
        assert_close(head.bbox_preds[level], golden[f"head.bbox_pred.{level}"], f"bbox_pred.{level}")
        assert_close(head.kernel_preds[level], golden[f"head.kernel_pred.{level}"], f"kernel_pred.{level}")
    assert_close(head.mask_feat, golden["head.mask_feat"], "mask_feat")


def test_final_detections(run_a, golden):
    dets = run_a[3]
    assert len(dets) == 100
    assert torch.equal(dets.labels, golden["pred.labels"])
    assert_close(dets.scores, golden["pred.scores"], "pred.scores")
    assert_close(dets.boxes, golden["pred.bboxes"], "pred.bboxes")
    assert_close(dets.priors, golden["pred.priors"], "pred.priors")
    assert_close(dets.kernels, golden["pred.kernels"], "pred.kernels")


@pytest.fixture(scope="module")
def mask_bands_a(run_a, golden, detector):
    """Reference logits of A at image size and their rounding bands (from the accumulated magnitude at stride 8)."""
    dets = run_a[3]
    mag8 = accumulated_magnitude_dynamic(detector, run_a[2].mask_feat[0], dets.kernels, dets.priors)
    ref_logits = upsample_mask_logits(golden["pred.mask_logits_stride8"], SCALE_A, (320, 480))
    return mag8, ref_logits, upsample_mask_logits(logit_band(mag8), SCALE_A, (320, 480))


def test_stride8_mask_logits(run_a, golden, detector, mask_bands_a):
    dets = run_a[3]
    logits = detector.dynamic_mask_logits(run_a[2].mask_feat[0], dets.kernels, dets.priors)
    assert_close_accumulated(logits, golden["pred.mask_logits_stride8"], mask_bands_a[0], "mask_logits_stride8")


def test_reference_masks_are_the_thresholded_reference_logits(golden_masks, mask_bands_a):
    """The criterion's premise: mmdet's masks are its stride-8 logits rescaled as ``upsample_mask_logits`` does
    (up to interpolation rounding, far inside the band)."""
    _, ref_logits, band = mask_bands_a
    assert_decisions_match(ref_logits > 0, torch.from_numpy(golden_masks["pred.masks"]), ref_logits, 0.0,
                           band * 1e-2, "rescaled reference logits")


def test_final_masks(run_a, golden_masks, mask_bands_a):
    _, ref_logits, band = mask_bands_a
    probs = run_a[3].mask_logits.sigmoid()
    ref = torch.from_numpy(golden_masks["pred.masks"])
    assert probs.shape == ref.shape == (100, 320, 480)
    assert_decisions_match(probs > 0.5, ref, ref_logits, 0.0, band, "final masks")
    top8 = torch.from_numpy(golden_masks["pred.mask_probs_top8_float16"].astype(np.float32))
    allowed = sigmoid_band(ref_logits[:8], band[:8]) + FP16_ROUNDING
    assert bool(((probs[:8] - top8).abs() <= allowed).all()), "top-8 probabilities outside the rounding band"


def test_nms_candidates_and_keep(detector, golden, run_a):
    """The NMS inputs (candidate set) and the kept indices, via the public nms()."""
    from cartoonseg.models.rtmdet_ins import nms

    boxes, scores = golden["nms.in_bboxes"], golden["nms.in_scores"]
    keep = nms(boxes, scores, 0.6)
    assert torch.equal(keep, golden["nms.keep"])
    # batched (class-aware) NMS with one class is plain NMS
    from cartoonseg.models.rtmdet_ins import batched_nms

    assert torch.equal(batched_nms(boxes, scores, golden["nms.in_labels"], 0.6), golden["nms.keep"])


def test_unresized_input_b(detector, golden, golden_masks):
    img = golden["image_bgr_uint8"].permute(2, 0, 1).float()
    x = ((img - MEAN) / STD)[None]
    with torch.no_grad():
        head = detector(x)
        dets = detector.postprocess(head, 0, img_shape=(320, 480), ori_shape=(320, 480), scale_factor=(1.0, 1.0))
    for level in range(3):
        assert_close(head.cls_scores[level], golden[f"B.head.cls_score.{level}"], f"B.cls_score.{level}")
        assert_close(head.bbox_preds[level], golden[f"B.head.bbox_pred.{level}"], f"B.bbox_pred.{level}")
        assert_close(head.kernel_preds[level], golden[f"B.head.kernel_pred.{level}"], f"B.kernel_pred.{level}")
    assert_close(head.mask_feat, golden["B.head.mask_feat"], "B.mask_feat")
    assert torch.equal(dets.labels, golden["B.pred.labels"])
    assert_close(dets.scores, golden["B.pred.scores"], "B.pred.scores")
    assert_close(dets.boxes, golden["B.pred.bboxes"], "B.pred.bboxes")
    logits = detector.dynamic_mask_logits(head.mask_feat[0], dets.kernels, dets.priors)
    mag8 = accumulated_magnitude_dynamic(detector, head.mask_feat[0], dets.kernels, dets.priors)
    assert_close_accumulated(logits, golden["B.pred.mask_logits_stride8"], mag8, "B.mask_logits_stride8")
    ref_logits = upsample_mask_logits(golden["B.pred.mask_logits_stride8"], (1.0, 1.0), (320, 480))
    band = upsample_mask_logits(logit_band(mag8), (1.0, 1.0), (320, 480))
    assert_decisions_match(dets.mask_logits > 0, torch.from_numpy(golden_masks["B.pred.masks"]), ref_logits, 0.0,
                           band, "B final masks")


def test_segmenter_end_to_end_matches_reference(detector, golden, golden_masks, mask_bands_a):
    """Segmenter on the RGB image = reference predict() followed by CartoonSegmentation's score filter
    (exact path: reference op order; the default fast path is checked in test_fast_paths.py)."""
    rgb = golden["image_bgr_uint8"].numpy()[:, :, ::-1].copy()
    seg = cartoonseg.Segmenter(detector, None, score_thr=0.3, fuse=False, channels_last=False)
    inst = seg(rgb)
    keep = golden["pred.scores"] > 0.3
    assert len(inst) == int(keep.sum())
    assert_close(inst.boxes, golden["pred.bboxes"][keep], "segmenter boxes")
    assert_close(inst.scores, golden["pred.scores"][keep], "segmenter scores")
    assert inst.masks.dtype == torch.float32 and inst.masks.shape[1:] == (320, 480)
    _, ref_logits, band = mask_bands_a
    assert_decisions_match(inst.binary, torch.from_numpy(golden_masks["pred.masks"][keep.numpy()]), ref_logits[keep],
                           0.0, band[keep], "segmenter masks")


def test_fp32_dynamic_conv_under_autocast(detector, run_a):
    dets = run_a[3]
    ref = detector.dynamic_mask_logits(run_a[2].mask_feat[0], dets.kernels[:5], dets.priors[:5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = detector.dynamic_mask_logits(run_a[2].mask_feat[0].bfloat16(), dets.kernels[:5].bfloat16(),
                                           dets.priors[:5])
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max()
