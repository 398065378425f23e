"""Golden parity of the IS-Net refiner against the original CartoonSegmentation code
(``../shared/reference/isnet_refiner_golden_*``): side outputs, decoder features and the 720² production path.
Criteria (``tests/_numerics.py``): features within 1e-4 of their range; the production d1 logits within 1e-4 of the
accumulated magnitude of side1's inputs; probabilities and masks within the resulting rounding band, so the tests
hold on AVX2 and AVX-512 CPUs and any thread count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import torch.nn.functional as F
from _numerics import (
    assert_close,
    assert_close_accumulated,
    assert_decisions_match,
    isnet_d1_magnitude,
    logit_band,
    sigmoid_band,
)

import cartoonseg
from cartoonseg.models import ISNetDIS

FEATURES = ("hx1d", "hx2d", "hx3d", "hx4d", "hx5d", "hx6")


@pytest.fixture(scope="module")
def golden(reference):
    return load_file(str(reference / "isnet_refiner_golden_outputs.safetensors"))


@pytest.fixture(scope="module")
def refiner(reference):
    weights = np.load(reference / "isnet_refiner_golden_weights.npz")
    model = ISNetDIS()
    cartoonseg.checkpoint.load_state_dict_strict(model, {k: torch.from_numpy(v) for k, v in weights.items()})
    return model.eval()


def test_key_manifest(reference):
    import json

    manifest = json.loads((reference / "isnet_refiner_keys.json").read_text())
    expected = {k: tuple(shape) for k, shape, _ in manifest["state_dict"]}
    model_sd = ISNetDIS().state_dict()
    assert len(model_sd) == 798 == manifest["num_state_dict_entries"]
    assert {k: tuple(v.shape) for k, v in model_sd.items()} == expected
    assert sum(p.numel() for p in ISNetDIS().parameters()) == 44_047_366


def test_side_outputs_and_features(refiner, golden):
    with torch.no_grad():
        sides, feats = refiner(golden["A.input"])
    for i, d in enumerate(sides, start=1):
        assert_close(d, golden[f"A.d{i}"], f"A.d{i}")
    for name, f in zip(FEATURES, feats):
        assert_close(f, golden[f"A.{name}"], f"A.{name}")
    with torch.no_grad():
        assert_close(refiner.predict_logits(golden["A.input"]), golden["A.d1"], "predict_logits")


@pytest.fixture(scope="module")
def production_bands(refiner, golden):
    """For the 720² production input B: the d1 magnitude, and the reference probability at image size with its
    rounding band (the d1 band through the sigmoid, then the Segmenter's crop + align_corners resize, which is
    convex, so it maps bands to bands)."""
    u8 = golden["B.input_uint8_bgr_mask"]
    x = torch.cat([u8[:, :3].float() / 255, u8[:, 3:].float()], dim=1)
    mag = isnet_d1_magnitude(refiner, x)
    prob_band = sigmoid_band(golden["B.d1"], logit_band(mag))[:, :, :320, :480]
    prob_band = F.interpolate(prob_band, size=(320, 480), mode="bilinear", align_corners=True)[:, 0] + 1e-6
    return x, mag, prob_band


def test_production_720_run(refiner, golden, production_bands):
    """The Segmenter's stage-2 path on the golden image and masks gives the reference d1 and probabilities."""
    x, mag, prob_band = production_bands
    with torch.no_grad():
        assert_close_accumulated(refiner.predict_logits(x), golden["B.d1"], mag, "B.d1")
    u8 = golden["B.input_uint8_bgr_mask"]
    bgr = u8[0, :3, :320, :480].permute(1, 2, 0).numpy()
    rgb = bgr[:, :, ::-1].copy()
    coarse = u8[:, 3, :320, :480].float()
    seg = cartoonseg.Segmenter(None, refiner, refine_size=720, mask_thr=0.3, fuse=False, channels_last=False)
    refined = seg.refine(rgb, coarse)
    assert refined.masks.shape == (2, 320, 480)
    ref = golden["B.refined_prob_at_image_size"]
    err = (refined.masks - ref).abs()
    assert bool((err <= prob_band).all()), f"probability error {err.max().item():.3g} outside the rounding band"
    assert_decisions_match(refined.binary, ref > 0.3, ref, 0.3, prob_band, "refined masks")
    assert refined.mask_thr == 0.3


def test_default_fast_path_on_the_720_run(refiner, golden):
    """The default Segmenter (BN folded, channels_last) against the reference: probabilities within 1e-3 and the
    golden mask criterion (per-instance mismatch <= 1e-4 of the pixels). Measured: 1.9e-4 and 3.3e-5."""
    u8 = golden["B.input_uint8_bgr_mask"]
    rgb = u8[0, :3, :320, :480].permute(1, 2, 0).numpy()[:, :, ::-1].copy()
    coarse = u8[:, 3, :320, :480].float()
    seg = cartoonseg.Segmenter(None, refiner, refine_size=720, mask_thr=0.3)
    assert seg.fuse and seg.channels_last
    refined = seg.refine(rgb, coarse)
    ref = golden["B.refined_prob_at_image_size"]
    assert (refined.masks - ref).abs().max().item() <= 1e-3
    mismatch = (refined.binary != (ref > 0.3)).flatten(1).float().mean(1)
    assert mismatch.max().item() <= 1e-4, mismatch
