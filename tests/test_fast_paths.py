"""Inference fast paths: BN folding (cartoonseg.models.fuse), channels_last, bf16 autocast masks vs fp32 (IoU),
chunked refine/paste-back. Tiny random models plus the golden tiny detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cartoonseg
from cartoonseg.models.fuse import fold_bn_into_conv, fuse_conv_bn, inference_copy


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def test_fold_bn_into_conv_is_the_eval_identity():
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(5, 7, 3, padding=2, dilation=2, bias=True), torch.nn.BatchNorm2d(7, eps=1e-3)
    _randomise_bn(bn)
    x = torch.randn(2, 5, 11, 13)
    with torch.no_grad():
        ref = bn(conv(x))
        out = fold_bn_into_conv(conv, bn)(x)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    with pytest.raises(TypeError):
        fold_bn_into_conv(bn, conv)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return _randomise_bn(cartoonseg.build_detector("tiny")), _randomise_bn(cartoonseg.build_refiner("tiny"))


def test_fused_models_match_and_have_no_bn(tiny):
    det, ref = tiny
    x = torch.randn(1, 3, 128, 128)
    r = torch.rand(1, 4, 96, 96)
    with torch.no_grad():
        a, b = det(x), fuse_conv_bn(det)(x)
        for u, v in zip(a.cls_scores + a.kernel_preds + [a.mask_feat], b.cls_scores + b.kernel_preds + [b.mask_feat]):
            assert (u - v).abs().max() <= 1e-4 * u.abs().max() + 1e-6
        fr = fuse_conv_bn(ref)
        assert (ref.predict_logits(r) - fr.predict_logits(r)).abs().max() <= 1e-4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fr.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ref.modules())  # the original is untouched


def test_inference_copy_is_cached_and_invalidated():
    model = cartoonseg.build_refiner("tiny").eval()
    a = inference_copy(model, channels_last=True)
    assert inference_copy(model, channels_last=True) is a
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # an in-place update (optimizer step, load_state_dict)
    assert inference_copy(model, channels_last=True) is not a


def test_golden_detector_fast_path_within_float_tolerance(reference):
    """Fused + channels_last on the golden tiny detector: boxes, scores (golden float tolerance) and masks.
    Mask pixels near the threshold flip (logits ~1e3 amplify rounding): measured 1.2e-4 of the pixels, bound 3e-4."""
    from safetensors.torch import load_file

    det = cartoonseg.load_detector(reference / "rtmdet_ins_tiny_golden_weights.safetensors")
    g = load_file(str(reference / "rtmdet_ins_tiny_golden_outputs.safetensors"))
    gm = np.load(reference / "rtmdet_ins_tiny_golden_masks.npz")
    rgb = g["image_bgr_uint8"].numpy()[:, :, ::-1].copy()
    keep = g["pred.scores"] > 0.3
    inst = cartoonseg.Segmenter(det, None, score_thr=0.3, fuse=True, channels_last=True)(rgb)
    assert len(inst) == int(keep.sum())
    for name, out, ref in (("boxes", inst.boxes, g["pred.bboxes"][keep]), ("scores", inst.scores, g["pred.scores"][keep])):
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-6, name
    mismatch = (inst.binary.numpy() != gm["pred.masks"][keep.numpy()]).reshape(len(inst), -1).mean(1)
    assert mismatch.max() <= 3e-4


def _mask_iou(a, b):
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@pytest.mark.parametrize("fast", [False, True])
def test_bf16_masks_match_fp32_by_iou(fast, bf16_kernels):
    torch.manual_seed(0)
    det, ref = cartoonseg.build_detector("tiny"), cartoonseg.build_refiner("tiny")
    rng = np.random.default_rng(0)
    image = np.full((96, 128, 3), 220, np.uint8)
    image[10:80, 10:60] = (200, 40, 40)
    image[30:90, 70:120] = (40, 60, 200)
    image = (image + rng.integers(0, 20, image.shape)).clip(0, 255).astype(np.uint8)
    boxes = torch.tensor([[10.0, 10, 60, 80], [70, 30, 120, 90], [0, 0, 128, 96]])
    kw = {"score_thr": 0.0, "max_instances": 4, "det_size": 256, "refine_size": 96, "fuse": fast, "channels_last": fast}
    fine32 = cartoonseg.Segmenter(det, ref, **kw).refine(image, boxes)
    fine16 = cartoonseg.Segmenter(det, ref, precision="bf16", **kw).refine(image, boxes)
    assert _mask_iou(fine32.binary, fine16.binary).min() >= 0.99
    c32 = cartoonseg.Segmenter(det, ref, **kw).detect(image)
    c16 = cartoonseg.Segmenter(det, ref, precision="bf16", **kw).detect(image)
    assert len(c32) == len(c16) > 0  # coarse masks of random weights are near-flat: only the count is compared


def test_chunked_refine_independent_of_batch(tiny):
    _, ref = tiny
    image = np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    boxes = torch.tensor([[5.0, 5, 40, 60], [30, 10, 85, 65], [0, 0, 90, 70]])
    one = cartoonseg.Segmenter(None, ref, refine_size=64, refine_batch=1).refine(image, boxes)
    two = cartoonseg.Segmenter(None, ref, refine_size=64, refine_batch=2).refine(image, boxes)
    assert one.masks.shape == (3, 70, 90)
    assert (one.masks - two.masks).abs().max() <= 1e-5


def test_fast_path_is_the_default_and_prepared_models_run_without_a_copy(tiny):
    from cartoonseg.models.fuse import is_prepared, prepare_for_inference

    det, ref = tiny
    seg = cartoonseg.Segmenter(det, ref)
    assert seg.fuse and seg.channels_last
    assert seg._infer(ref) is not ref  # a cached fused copy; the caller's model is left intact
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ref.modules())
    image = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes = torch.tensor([[5.0, 5, 50, 55], [20, 10, 78, 58]])
    kw = {"refine_size": 64}
    copied = cartoonseg.Segmenter(None, ref, **kw).refine(image, boxes)
    exact = cartoonseg.Segmenter(None, ref, fuse=False, channels_last=False, **kw).refine(image, boxes)
    import copy

    own = copy.deepcopy(ref)
    assert not is_prepared(own, fuse=True, channels_last=True)
    assert prepare_for_inference(own) is own
    assert is_prepared(own, fuse=True, channels_last=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in own.modules())
    fast = cartoonseg.Segmenter(None, own, **kw)
    assert fast._infer(own) is own  # prepared in place: no second set of weights
    prepared = fast.refine(image, boxes)
    assert torch.equal(prepared.masks, copied.masks)
    assert (prepared.masks - exact.masks).abs().max() <= 1e-4
    own.to("cpu")  # a device move keeps the layout
    assert is_prepared(own, fuse=True, channels_last=True)


def test_chunked_mask_decode_is_bit_identical(tiny, monkeypatch):
    """decode_masks works a few instances at a time into one output; chunking must not change a bit."""
    import cartoonseg.models.rtmdet_ins as rtm

    det, _ = tiny
    image = np.random.default_rng(3).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    seg = cartoonseg.Segmenter(det, score_thr=0.0, max_instances=7, det_size=128)
    whole = seg.detect(image)
    monkeypatch.setattr(rtm, "DECODE_CHUNK_BYTES", 2 * 4 * 150 * 230)  # two instances per chunk
    chunked = seg.detect(image)
    assert len(whole) == 7
    assert torch.equal(whole.masks, chunked.masks)


def test_call_equals_detect_then_refine(tiny):
    """__call__ hands the refiner binary coarse masks instead of the float maps; the result is the same."""
    det, ref = tiny
    image = np.random.default_rng(4).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    seg = cartoonseg.Segmenter(det, ref, score_thr=0.0, max_instances=4, det_size=128, refine_size=64)
    both = seg(image)
    two_step = seg.refine(image, seg.detect(image))
    assert len(both) == 4 and both.masks.is_contiguous()
    assert torch.equal(both.masks, two_step.masks) and torch.equal(both.boxes, two_step.boxes)
    assert both.mask_thr == seg.mask_thr


@pytest.mark.parametrize("act", ["relu", "swish", "none"])
def test_fused_conv_act_matches_conv_then_activation(act, monkeypatch):
    import cartoonseg.models.fuse as fz

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 6, 3, padding=2, dilation=2, groups=2).eval().to(memory_format=torch.channels_last)
    ref_fn = {"relu": torch.relu, "swish": torch.nn.functional.silu, "none": lambda t: t}[act]
    x = torch.randn(2, 8, 17, 19).contiguous(memory_format=torch.channels_last)  # the layout of the fast path
    fused = fz.FusedConvAct(conv, act)
    with torch.no_grad():
        ref = ref_fn(conv(x))
        out = fused(x)
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert (out - ref).abs().max() <= (0 if act != "swish" else 1e-6)  # ReLU/none: bit-identical post-op
        monkeypatch.setattr(fz, "_POINTWISE", None)  # no oneDNN: plain conv + activation
        assert torch.equal(fused(x), ref)
    with pytest.raises(ValueError, match="act"):
        fz.FusedConvAct(conv, "gelu")


@pytest.mark.parametrize("act", ["relu", "swish", "none"])
def test_fused_conv_act_under_bf16_autocast(act, bf16_kernels):
    import cartoonseg.models.fuse as fz

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 6, 3, padding=2, dilation=2, groups=2).eval().to(memory_format=torch.channels_last)
    ref_fn = {"relu": torch.relu, "swish": torch.nn.functional.silu, "none": lambda t: t}[act]
    x = torch.randn(2, 8, 17, 19).contiguous(memory_format=torch.channels_last)
    fused = fz.FusedConvAct(conv, act)
    with torch.no_grad():
        ref = ref_fn(conv(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fused(x)
    # bf16 keeps 8 significant bits: 2**-8 relative per rounding, a few roundings per output -> 5 % of the range
    assert low.dtype == torch.bfloat16 and (low.float() - ref).abs().max() <= 0.05 * ref.abs().max()


def test_fused_copy_has_no_separate_activations_and_bf16_copy_has_bf16_weights(tiny, bf16_kernels):
    from cartoonseg.models.fuse import FusedConvAct

    _, ref = tiny
    seg = cartoonseg.Segmenter(None, ref, precision="bf16")
    run = seg._infer(ref)
    assert any(isinstance(m, FusedConvAct) for m in run.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in run.modules())
    assert {p.dtype for p in run.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in ref.parameters()} == {torch.float32}  # the caller's model is untouched
    assert {p.dtype for p in cartoonseg.Segmenter(None, ref)._infer(ref).parameters()} == {torch.float32}
