"""Segmenter contract on tiny random models: output structure, prompts of every kind, odd inputs, precision, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cartoonseg
from cartoonseg import Instances, rle
from _checkpoint_writers import save_flat_refiner_checkpoint, save_mmengine_detector_checkpoint


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return cartoonseg.build_detector("tiny"), cartoonseg.build_refiner("tiny")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.full((120, 200, 3), 230, np.uint8)
    img[20:100, 30:90] = (200, 40, 40)
    img[40:110, 120:180] = (40, 60, 200)
    return (img.astype(np.int16) + rng.integers(-10, 10, img.shape)).clip(0, 255).astype(np.uint8)


def test_two_stage_output_contract(models, image):
    seg = cartoonseg.Segmenter(*models, score_thr=0.0, max_instances=5, det_size=320)
    inst = seg(image)
    assert isinstance(inst, Instances) and 0 < len(inst) <= 5
    assert inst.boxes.shape == (len(inst), 4) and inst.boxes.dtype == torch.float32
    assert inst.masks.shape == (len(inst), 120, 200) and inst.masks.dtype == torch.float32
    assert float(inst.masks.min()) >= 0 and float(inst.masks.max()) <= 1
    assert inst.binary.dtype == torch.bool and inst.mask_thr == 0.3
    assert torch.all(inst.scores[:-1] >= inst.scores[1:])
    coarse = seg.detect(image)
    assert coarse.mask_thr == 0.5 and torch.equal(coarse.boxes, inst.boxes)


def test_score_threshold_and_max_instances(models, image):
    det, _ = models
    everything = cartoonseg.Segmenter(det, score_thr=0.0, max_instances=100, det_size=320).detect(image)
    top3 = cartoonseg.Segmenter(det, score_thr=0.0, max_instances=3, det_size=320).detect(image)
    assert torch.equal(top3.scores, everything.scores[:3])
    thr = float(everything.scores[len(everything) // 2])
    some = cartoonseg.Segmenter(det, score_thr=thr, det_size=320).detect(image)
    assert bool((some.scores > thr).all()) and len(some) < len(everything)
    none = cartoonseg.Segmenter(det, score_thr=1.0, det_size=320)(image)
    assert len(none) == 0 and none.masks.shape == (0, 120, 200)


def test_refine_from_boxes_masks_and_instances(models, image):
    seg = cartoonseg.Segmenter(None, models[1], refine_size=160)
    boxes = torch.tensor([[30.0, 20, 90, 100], [120, 40, 180, 110]])
    from_boxes = seg.refine(image, boxes)
    assert from_boxes.masks.shape == (2, 120, 200) and torch.equal(from_boxes.boxes, boxes)
    masks = torch.zeros(2, 120, 200)
    masks[0, 20:100, 30:90] = 1
    masks[1, 40:110, 120:180] = 0.7
    from_masks = seg.refine(image, masks)
    assert from_masks.boxes[0].tolist() == [30, 20, 90, 100]
    inst = Instances.from_masks(masks).replace(extras={"tags": ["a", "b"]})
    refined = seg.refine(image, inst)
    assert refined.extras["tags"] == ["a", "b"] and refined.mask_thr == 0.3
    assert len(seg.refine(image, torch.zeros(0, 4))) == 0
    with pytest.raises(ValueError, match="image size"):
        seg.refine(image, torch.zeros(1, 50, 50))
    with pytest.raises(RuntimeError, match="no detector"):
        seg(image)


def test_large_image_is_scaled_down_for_the_refiner(models):
    seg = cartoonseg.Segmenter(None, models[1], refine_size=96)
    img = np.zeros((300, 150, 3), np.uint8)
    out = seg.refine(img, torch.tensor([[10.0, 10, 100, 250]]))
    assert out.masks.shape == (1, 300, 150)


@pytest.mark.parametrize(
    "make",
    [
        lambda im: im.mean(2).astype(np.uint8),  # grey [H,W]
        lambda im: im[:, :, :1],  # [H,W,1]
        lambda im: np.concatenate([im, np.full(im.shape[:2] + (1,), 128, np.uint8)], 2),  # RGBA
        lambda im: torch.from_numpy(im).float() / 255,  # ComfyUI frame layout
        lambda im: torch.from_numpy(im),  # torch uint8
    ],
)
def test_accepted_image_forms(models, image, make):
    seg = cartoonseg.Segmenter(models[0], score_thr=0.0, max_instances=2, det_size=320)
    assert seg(make(image)).image_size == (120, 200)


def test_bad_images_give_clear_errors(models):
    seg = cartoonseg.Segmenter(models[0], det_size=320)
    with pytest.raises(ValueError, match="empty"):
        seg(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        seg(np.full((10, 10, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="shape"):
        seg(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(TypeError):
        seg("image.png")


@pytest.mark.parametrize("shape", [(1, 1), (3, 700), (700, 3), (33, 2000)])
def test_tiny_and_extreme_aspect_images(models, shape):
    seg = cartoonseg.Segmenter(*models, score_thr=0.0, max_instances=2, det_size=320, refine_size=128)
    inst = seg(np.full(shape + (3,), 127, np.uint8))
    assert inst.masks.shape[1:] == shape


def test_bad_arguments(models):
    det, ref = models
    with pytest.raises(ValueError, match="det_size"):
        cartoonseg.Segmenter(det, det_size=100)
    with pytest.raises(ValueError, match="precision"):
        cartoonseg.Segmenter(det, precision="int8")
    with pytest.raises(TypeError, match="RTMDetIns"):
        cartoonseg.Segmenter(ref)
    with pytest.raises(ValueError, match="score_thr"):
        cartoonseg.Segmenter(det, score_thr=2)


def test_bf16_autocast_matches_fp32_detections(models, image, bf16_kernels):
    det = models[0]
    a = cartoonseg.Segmenter(det, score_thr=0.0, max_instances=3, det_size=320).detect(image)
    seg = cartoonseg.Segmenter(det, score_thr=0.0, max_instances=3, det_size=320, precision="bf16")
    b = seg.detect(image)
    assert seg.effective_precision == "bf16"
    assert b.masks.dtype == torch.float32 and b.boxes.dtype == torch.float32
    assert len(a) == len(b) and bool(torch.isfinite(b.boxes).all()) and bool(torch.isfinite(b.masks).all())


@pytest.mark.parametrize("fast", [False, True])
def test_bf16_without_kernels_runs_fp32_and_warns_once(models, image, no_bf16, fast):
    """On a CPU without bf16 kernels (AVX2-only) bf16 is never attempted (oneDNN would raise deep inside the
    forward): the Segmenter runs fp32, identical to an fp32 Segmenter, after one warning naming the CPU."""
    from cartoonseg.device import PrecisionFallbackWarning

    det, ref = models
    kw = {"score_thr": 0.0, "max_instances": 3, "det_size": 320, "refine_size": 64, "fuse": fast, "channels_last": fast}
    want = cartoonseg.Segmenter(det, ref, **kw)(image)
    seg = cartoonseg.Segmenter(det, ref, precision="bf16", **kw)
    with pytest.warns(PrecisionFallbackWarning, match="AVX2") as record:
        got = seg(image)
        again = seg(image)
    assert len([w for w in record if issubclass(w.category, PrecisionFallbackWarning)]) == 1
    assert seg.effective_precision == "fp32" and seg.precision == "bf16"
    assert torch.equal(got.masks, want.masks) and torch.equal(again.boxes, want.boxes)
    assert all(p.dtype == torch.float32 for p in seg._infer(ref).parameters())
    auto = cartoonseg.Segmenter(det, ref, precision="auto", **kw)
    assert auto.effective_precision == "fp32"


def test_cli_segment_end_to_end(tmp_path, models, image):
    det, ref = models
    d = save_mmengine_detector_checkpoint(det, tmp_path / "w" / "rtmdetl_e60.ckpt")
    save_flat_refiner_checkpoint(ref, tmp_path / "w" / "refine_last.ckpt")
    Image.fromarray(image).save(tmp_path / "a.png")
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], 2)
    Image.fromarray(rgba).save(tmp_path / "b.png")
    from cartoonseg.__main__ import main

    code = main(["segment", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--detector", str(d),
                 "--refiner", "refiner", "--weights-dir", str(tmp_path / "w"), "--no-download",
                 "--out", str(tmp_path / "out"), "--score-thr", "0.0", "--max-instances", "3", "--det-size", "320"])
    assert code == 0
    meta = json.loads((tmp_path / "out" / "a" / "instances.json").read_text())
    assert meta["image_size"] == [120, 200] and len(meta["instances"]) == 3
    first = meta["instances"][0]
    assert len(first["bbox_xyxy"]) == 4 and 0 <= first["score"] <= 1
    mask = rle.decode(first["segmentation"])
    png = np.asarray(Image.open(tmp_path / "out" / "a" / first["mask_png"]))
    assert mask.shape == png.shape == (120, 200)
    assert np.array_equal(mask, png / 255.0 > meta["mask_thr"]) or abs(int(mask.sum()) - int((png > 77).sum())) < 50
    assert (tmp_path / "out" / "a" / "overlay.png").exists() and (tmp_path / "out" / "b" / "instances.json").exists()


def test_cli_errors_are_clean(tmp_path, capsys):
    from cartoonseg.__main__ import main

    assert main(["segment", str(tmp_path / "missing.png"), "--detector", str(tmp_path / "no.ckpt"), "--out",
                 str(tmp_path / "o"), "--no-download"]) == 2
    assert "error:" in capsys.readouterr().err


def test_mask_thr_without_refiner_thresholds_the_coarse_masks(models, image):
    """Without a refiner a given mask_thr applies to the coarse masks the Segmenter returns (every CLI relies on it);
    none given keeps the detector's 0.5. Stage 1 itself and the refiner's prompts keep the detector's threshold."""
    from cartoonseg.evaluation.predict import detect_batch

    det, ref = models
    default = cartoonseg.Segmenter(det, score_thr=0.0, max_instances=3, det_size=320)
    a = default(image)
    thr = round(float(a.masks.flatten().median()), 4)  # the random tiny detector's probabilities sit near 0.49
    given = cartoonseg.Segmenter(det, score_thr=0.0, max_instances=3, det_size=320, mask_thr=thr)
    assert (default.result_mask_thr, given.result_mask_thr) == (0.5, thr)
    b = given(image)
    assert (a.mask_thr, b.mask_thr) == (0.5, thr) and torch.equal(a.masks, b.masks)
    assert int(b.binary.sum()) > int(a.binary.sum())
    assert given.detect(image).mask_thr == 0.5
    # batched evaluation predictions threshold the final coarse masks the same way
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    (pa,), (pb,) = detect_batch(default, [bgr]), detect_batch(given, [bgr])
    assert int(pb["binary"].sum()) > int(pa["binary"].sum())
    assert np.mean(pb["binary"] != b.binary.numpy()) < 1e-3  # the same masks up to batched-conv rounding
    # with a refiner the refined threshold applies, to an empty result too
    two = cartoonseg.Segmenter(det, ref, score_thr=1.0, det_size=320, mask_thr=0.4)
    empty = two(image)
    assert len(empty) == 0 and empty.mask_thr == two.result_mask_thr == 0.4


@pytest.mark.parametrize("option, value, what", [("--max-instances", "0", "max_instances"),
                                                 ("--score-thr", "5", "score_thr"),
                                                 ("--mask-thr", "-0.5", "mask_thr"),
                                                 ("--det-size", "100", "det_size")])
def test_cli_bad_settings_fail_before_outputs_and_weights(tmp_path, capsys, option, value, what):
    """segment / style checked these only when the Segmenter was built: after the output folder was made (left
    behind, empty) and the weights were read. Now they fail first, naming the setting; the weights named here do
    not even exist."""
    from cartoonseg.__main__ import main

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    missing = str(tmp_path / "no.ckpt")
    assert main(["segment", str(tmp_path / "a.png"), "--detector", missing, "--refiner", missing, "--no-download",
                 "--out", str(tmp_path / "out"), option, value]) == 2
    assert f"error: {what} must" in capsys.readouterr().err and not (tmp_path / "out").exists()
    if option in ("--max-instances", "--score-thr"):
        assert main(["style", str(tmp_path / "a.png"), "--model", missing, "--detector", missing, "--refiner", "none",
                     "--out", str(tmp_path / "styled"), option, value]) == 2
        assert f"error: {what} must" in capsys.readouterr().err and not (tmp_path / "styled").exists()
