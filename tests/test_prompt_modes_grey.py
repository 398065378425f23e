"""Box prompts through the detector's kernels vs rectangles (the reference's ``segment_with_bboxes``), and grey /
manga input (the reference's ``infer_grey``), on tiny random models."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import cartoonseg
from cartoonseg import Instances
from cartoonseg.segmenter import boxes_to_masks
from cartoonseg.transforms import grey_rgb


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and immune to a loaded machine
    yield


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    det, ref = cartoonseg.build_detector("tiny"), cartoonseg.build_refiner("tiny")
    return cartoonseg.Segmenter(det, ref, score_thr=0.0, max_instances=4, det_size=160, refine_size=96)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.full((120, 200, 3), 230, np.uint8)
    img[20:100, 30:90] = (200, 40, 40)
    img[40:110, 120:180] = (40, 60, 200)
    return (img.astype(np.int16) + rng.integers(-10, 10, img.shape)).clip(0, 255).astype(np.uint8)


def test_kernel_mode_gives_the_matched_detection_its_coarse_mask(seg, image):
    detected = seg.detect(image)
    assert len(detected) >= 2
    # a box equal to a detection's box picks that detection (IoU 1): its coarse mask, box and score
    k = seg.kernel_prompts(image, detected.boxes[:2])
    assert torch.equal(k.masks, detected.binary[:2].float())
    assert torch.equal(k.boxes, detected.boxes[:2]) and torch.equal(k.scores, detected.scores[:2])
    assert k.extras["prompt_iou"] == [1.0, 1.0]


def test_kernel_and_rectangle_modes_differ_as_documented(seg, image):
    loose = torch.tensor([[10.0, 5.0, 110.0, 115.0], [300.0, 300.0, 320.0, 320.0]])  # 2nd: outside every candidate
    k = seg.kernel_prompts(image, loose)
    rect = boxes_to_masks(loose, 120, 200)
    # kernel: the best-IoU candidate's mask (not a rectangle) and its box/score; the box beyond the image overlaps
    # no candidate and keeps its rectangle (here empty, the box lies outside the image), IoU 0, score 1
    assert k.extras["prompt_iou"][0] > 0 and k.extras["prompt_iou"][1] == 0.0
    assert not torch.equal(k.masks[0], rect[0]) and not torch.equal(k.boxes[0], loose[0])
    assert torch.equal(k.masks[1], rect[1]) and torch.equal(k.boxes[1], loose[1]) and float(k.scores[1]) == 1.0
    assert k.extras["prompt_box"] == loose.tolist()
    # refine(boxes): kernel mode refines exactly those coarse masks, rectangle mode the filled boxes
    by_kernel = seg.refine(image, loose)  # the default prompt_mode is "kernel"
    by_rect = seg.refine(image, loose, prompt_mode="rectangle")
    # (the 2nd box covers no pixel of the image: an empty mask, see test_box_prompts_that_cover_no_pixel_...)
    assert torch.equal(by_kernel.masks[:1], seg.refine(image, k.masks[:1]).masks)
    assert torch.equal(by_rect.masks[:1], seg.refine(image, rect[:1]).masks)
    assert not by_kernel.masks[1].any() and not by_rect.masks[1].any()
    assert float((by_kernel.masks[0] - by_rect.masks[0]).abs().max()) > 1e-3
    assert torch.equal(by_rect.boxes, loose) and torch.equal(by_kernel.boxes[0], k.boxes[0])
    assert "prompt_iou" in by_kernel.extras and not by_rect.extras
    # mask and Instances prompts are the same in both modes
    m = rect[:1]
    assert torch.equal(seg.refine(image, m).masks, seg.refine(image, m, prompt_mode="rectangle").masks)


def test_prompt_mode_is_checked_and_kernel_needs_a_detector(seg, image):
    with pytest.raises(ValueError, match="prompt_mode must be one of"):
        seg.refine(image, torch.tensor([[0.0, 0, 5, 5]]), prompt_mode="box")
    with pytest.raises(ValueError, match="prompt_mode must be one of"):
        cartoonseg.Segmenter(seg.detector, prompt_mode="rect")
    alone = cartoonseg.Segmenter(None, seg.refiner, refine_size=96)
    assert alone.prompt_mode == "rectangle" and seg.prompt_mode == "kernel"  # "auto": kernel only with a detector
    with pytest.raises(ValueError, match="needs a detector.*rectangle"):
        alone.refine(image, torch.tensor([[0.0, 0, 5, 5]]), prompt_mode="kernel")
    with pytest.raises(ValueError, match="needs a detector.*rectangle"):
        cartoonseg.Segmenter(None, seg.refiner, prompt_mode="kernel").refine(image, torch.tensor([[0.0, 0, 5, 5]]))
    assert len(alone.refine(image, torch.tensor([[0.0, 0, 5, 5]]))) == 1
    assert len(alone.refine(image, torch.zeros(1, 120, 200))) == 1  # masks need no detector


def test_grey_rgb_matches_the_reference_conversion(image, monkeypatch):
    grey = grey_rgb(image)
    ref = cv2.cvtColor(np.ascontiguousarray(image[:, :, ::-1]), cv2.COLOR_BGR2GRAY)  # the reference's call (BGR)
    assert all(np.array_equal(grey[:, :, c], ref) for c in range(3))
    assert np.array_equal(grey_rgb(grey), grey)
    import cartoonseg.transforms as transforms

    monkeypatch.setattr(transforms, "cv2", None)  # the fallback without OpenCV: within one level
    fallback = transforms.grey_rgb(image)
    assert int(np.abs(fallback.astype(int) - grey.astype(int)).max()) <= 1
    assert np.array_equal(transforms.grey_rgb(fallback), fallback)


def test_grey_option_runs_both_stages_on_the_grey_image(seg, image):
    grey_seg = cartoonseg.Segmenter(seg.detector, seg.refiner, score_thr=0.0, max_instances=4, det_size=160,
                                    refine_size=96, grey=True)
    a, b = grey_seg(image), seg(grey_rgb(image))
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.masks, seg(image).masks)
    box = torch.tensor([[30.0, 20, 90, 100]])
    assert torch.equal(grey_seg.refine(image, box).masks, seg.refine(grey_rgb(image), box).masks)


@pytest.mark.parametrize("channels", [1, 2])
def test_one_and_two_channel_images_are_accepted(seg, image, channels):
    grey = grey_rgb(image)[:, :, :1]
    arr = grey if channels == 1 else np.concatenate([grey, np.full_like(grey, 255)], 2)
    out = seg(arr)
    assert isinstance(out, Instances) and out.image_size == (120, 200)
    assert torch.equal(out.masks, seg(grey[:, :, 0]).masks)


def test_grey_alpha_images_follow_the_alpha_rules(tmp_path):
    from PIL import Image

    from cartoonseg.io import read_image, to_float_image, to_rgb_uint8

    la = np.zeros((4, 5, 2), np.uint8)
    la[..., 0] = 200
    la[:, :2, 1] = 255  # left part opaque, right part transparent
    assert np.array_equal(to_rgb_uint8(la), np.full((4, 5, 3), 200, np.uint8))  # alpha dropped
    white = to_rgb_uint8(la, alpha="white")
    assert (white[:, :2] == 200).all() and (white[:, 2:] == 255).all()
    keep = to_rgb_uint8(la, alpha="keep")
    assert keep.shape == (4, 5, 4) and np.array_equal(keep[..., 3], la[..., 1])
    assert torch.equal(to_float_image(torch.from_numpy(la).float() / 255), torch.full((4, 5, 3), 200 / 255))
    Image.fromarray(la, "LA").save(tmp_path / "la.png")  # a grey + alpha file reads like an RGBA one
    assert np.array_equal(read_image(tmp_path / "la.png"), white)
    with pytest.raises(ValueError, match=r"\[H,W,2\]"):
        to_rgb_uint8(np.zeros((4, 5, 5), np.uint8))


def test_cli_segment_box_prompts_and_grey(seg, image, tmp_path, capsys):
    from PIL import Image

    from cartoonseg import rle
    from cartoonseg.__main__ import main
    from _checkpoint_writers import save_flat_refiner_checkpoint, save_mmengine_detector_checkpoint

    det = save_mmengine_detector_checkpoint(seg.detector, tmp_path / "w" / "rtmdetl_e60.ckpt")
    ref = save_flat_refiner_checkpoint(seg.refiner, tmp_path / "w" / "refine_last.ckpt")
    Image.fromarray(image).save(tmp_path / "a.png")
    common = ["segment", str(tmp_path / "a.png"), "--detector", str(det), "--refiner", str(ref), "--no-download",
              "--det-size", "160", "--score-thr", "0", "--max-instances", "4"]

    def run(name, *extra):
        assert main([*common, "--out", str(tmp_path / name), *extra]) == 0
        return json.loads((tmp_path / name / "a" / "instances.json").read_text())["instances"]

    box = "10,5,110,115"
    rect = run("rect", "--box", box, "--prompt-mode", "rectangle")
    kern = run("kern", "--box", box)  # kernel is the default
    assert [r["bbox_xyxy"] for r in rect] == [[10.0, 5.0, 110.0, 115.0]]
    assert kern[0]["bbox_xyxy"] != rect[0]["bbox_xyxy"]  # the matched detection's box
    assert rle.decode(kern[0]["segmentation"]).tolist() != rle.decode(rect[0]["segmentation"]).tolist() or \
        kern[0]["score"] != rect[0]["score"]
    grey = run("grey", "--grey")
    Image.fromarray(grey_rgb(image)).save(tmp_path / "g.png")
    assert main(["segment", str(tmp_path / "g.png"), *common[2:], "--out", str(tmp_path / "g")]) == 0
    assert grey == json.loads((tmp_path / "g" / "g" / "instances.json").read_text())["instances"]
    assert main([*common, "--out", str(tmp_path / "bad"), "--box", "1,2,3"]) == 2
    assert "error: --box must be X1,Y1,X2,Y2" in capsys.readouterr().err



@pytest.mark.parametrize("mode", ["kernel", "rectangle"])
def test_box_prompts_that_cover_no_pixel_give_empty_masks(seg, image, mode):
    """A box outside the image, inverted or thinner than a pixel is an empty prompt: its instance keeps the box and
    gets an empty mask (the refiner used to return whatever it made of an empty coarse mask); the other boxes of
    the call are refined as if alone."""
    good = torch.tensor([[30.0, 20.0, 90.0, 100.0]])
    bad = torch.tensor([[300.0, 300.0, 320.0, 320.0], [90.0, 100.0, 30.0, 20.0], [10.2, 10.2, 10.4, 10.4],
                        [-40.0, -40.0, -1.0, -1.0]])
    out = seg.refine(image, torch.cat([good, bad]), prompt_mode=mode)
    assert len(out) == 5 and torch.equal(out.masks[0], seg.refine(image, good, prompt_mode=mode).masks[0])
    assert float(out.masks[0].max()) > 0 and not out.masks[1:].any() and not out.binary[1:].any()
    if mode == "rectangle":
        assert torch.equal(out.boxes[1:], bad)
