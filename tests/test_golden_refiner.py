"""Golden parity of the IS-Net refiner against the original CartoonSegmentation code
(``../shared/reference/isnet_refiner_golden_*``): side outputs, decoder features and the 720² production path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cartoonseg
from cartoonseg.models import ISNetDIS

FEATURES = ("hx1d", "hx2d", "hx3d", "hx4d", "hx5d", "hx6")


def assert_close(actual, expected, name):
    err = (actual.float() - expected.float()).abs().max().item()
    scale = expected.float().abs().max().item()
    assert actual.shape == expected.shape, name
    assert err <= 1e-4 * scale + 1e-6, f"{name}: {err:.3g} vs scale {scale:.3g}"


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


def test_production_720_run(refiner, golden, reference):
    """The Segmenter's stage-2 path on the golden image and masks gives the reference d1 and probabilities."""
    u8 = golden["B.input_uint8_bgr_mask"]
    x = torch.cat([u8[:, :3].float() / 255, u8[:, 3:].float()], dim=1)
    with torch.no_grad():
        assert_close(refiner.predict_logits(x), golden["B.d1"], "B.d1")
    bgr = u8[0, :3, :320, :480].permute(1, 2, 0).numpy()
    rgb = bgr[:, :, ::-1].copy()
    coarse = u8[:, 3, :320, :480].float()
    seg = cartoonseg.Segmenter(None, refiner, refine_size=720, mask_thr=0.3, fuse=False, channels_last=False)
    refined = seg.refine(rgb, coarse)
    assert refined.masks.shape == (2, 320, 480)
    err = (refined.masks - golden["B.refined_prob_at_image_size"]).abs().max().item()
    assert err <= 1e-5, err
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
