"""Evaluation: COCO RLE, Box/Mask/Boundary AP on hand-made cases with known answers, and agreement with
pycocotools' COCOeval on a random set."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cartoonseg.evaluation import EvalParams, evaluate, evaluate_all, mask_to_boundary, rle

REPO = Path(__file__).resolve().parents[1]


def _gt(masks_per_image, size=(100, 100)):
    images, anns = [], []
    aid = 1
    for i, masks in enumerate(masks_per_image, start=1):
        images.append({"id": i, "height": size[0], "width": size[1], "file_name": f"{i}.png"})
        for m in masks:
            anns.append(
                {
                    "id": aid,
                    "image_id": i,
                    "category_id": 1,
                    "iscrowd": 0,
                    "area": float(m.sum()),
                    "bbox": rle.mask_bbox(m),
                    "segmentation": rle.encode(m),
                }
            )
            aid += 1
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def _det(image_id, mask, score):
    return {
        "image_id": image_id,
        "category_id": 1,
        "score": score,
        "bbox": rle.mask_bbox(mask),
        "segmentation": rle.encode(mask),
    }


def _rect(y0, y1, x0, x1, size=(100, 100)):
    m = np.zeros(size, np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


# ------------------------------------------------------------------------------------------------ RLE
def test_rle_hand_case_and_roundtrip():
    m = np.array([[0, 1], [1, 1], [0, 0]], np.uint8)  # column-major: 0 1 0 | 1 1 0 -> runs 1,1,1,2,1
    enc = rle.encode(m)
    assert enc["size"] == [3, 2]
    assert rle.string_to_counts(enc["counts"]) == [1, 1, 1, 2, 1]
    assert (rle.decode(enc) == m).all()
    assert (rle.decode({"size": [3, 2], "counts": [1, 1, 1, 2, 1]}) == m).all()
    assert rle.area(enc) == 3
    assert rle.mask_bbox(m) == [0.0, 0.0, 2.0, 2.0]
    rng = np.random.default_rng(0)
    for _ in range(30):
        x = (rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.random()).astype(np.uint8)
        assert (rle.decode(rle.encode(x)) == x).all()
    with pytest.raises(ValueError, match="sum to"):
        rle.decode({"size": [3, 3], "counts": [1, 2]})


def test_rle_matches_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(1)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        x = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        ref = mask_utils.encode(np.asfortranarray(x))
        assert rle.encode(x)["counts"] == ref["counts"].decode()
        assert rle.mask_bbox(x) == pytest.approx(mask_utils.toBbox(ref).tolist())


# ------------------------------------------------------------------------------------------------ known answers
def test_perfect_predictions_score_one():
    masks = [[_rect(10, 50, 10, 60), _rect(55, 95, 40, 90)], [_rect(0, 30, 0, 30)]]
    gt = _gt(masks)
    dets = [_det(i, m, 0.9 - 0.1 * j) for i, ms in enumerate(masks, start=1) for j, m in enumerate(ms)]
    out = evaluate_all(gt, dets)
    for t in ("bbox", "segm", "boundary"):
        assert out[f"{t}_AP"] == pytest.approx(1.0)
        assert out[f"{t}_AP50"] == pytest.approx(1.0)


def test_iou_between_thresholds_gives_fraction_of_thresholds():
    # gt 100x... : IoU of the two rectangles = 62/100 -> matched at 0.50, 0.55, 0.60 only -> AP = 3/10
    g = _rect(0, 100, 0, 100)
    d = _rect(0, 62, 0, 100)
    gt = _gt([[g]])
    stats = evaluate(gt, [_det(1, d, 0.8)], "segm")
    assert stats["AP"] == pytest.approx(0.3)
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(0.0)
    assert evaluate(gt, [_det(1, d, 0.8)], "bbox")["AP"] == pytest.approx(0.3)


def test_higher_scored_false_positive_halves_precision():
    g = _rect(10, 40, 10, 40)
    fp = _rect(60, 90, 60, 90)
    gt = _gt([[g]])
    stats = evaluate(gt, [_det(1, fp, 0.9), _det(1, g, 0.5)], "segm")
    # recall reaches 1 at precision 1/2 for every threshold -> interpolated precision 0.5 everywhere
    assert stats["AP"] == pytest.approx(0.5)
    # the false positive scored below the true positive costs nothing
    assert evaluate(gt, [_det(1, fp, 0.1), _det(1, g, 0.5)], "segm")["AP"] == pytest.approx(1.0)


def test_missed_ground_truth_and_empty_inputs():
    gt = _gt([[_rect(10, 40, 10, 40), _rect(50, 90, 50, 90)]])
    stats = evaluate(gt, [_det(1, _rect(10, 40, 10, 40), 0.9)], "segm")
    # recall tops out at 0.5: precision 1 on the first 51 of 101 recall points
    assert stats["AP"] == pytest.approx(51 / 101)
    assert evaluate(gt, [], "bbox")["AP"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="image_id"):
        evaluate(gt, [_det(7, _rect(0, 5, 0, 5), 0.5)], "bbox")


def test_mask_to_boundary_width():
    m = _rect(20, 60, 20, 60)  # 40x40 square in a 100x100 image: d = round(0.02 * 141.4) = 3
    b = mask_to_boundary(m, 0.02)
    assert b.sum() == 40 * 40 - 34 * 34
    assert (b <= m).all()
    # image border counts as outside (the reference pads by one pixel before eroding)
    full = np.ones((100, 100), np.uint8)
    assert mask_to_boundary(full).sum() == 100 * 100 - 94 * 94


def test_boundary_iou_is_stricter_than_mask_iou():
    g = _rect(0, 100, 0, 100, size=(200, 200))  # d = round(0.02 * 282.8) = 6
    d = _rect(0, 100, 8, 100, size=(200, 200))  # mask IoU 0.92, boundary IoU much lower
    gt = _gt([[g]], size=(200, 200))
    segm = evaluate(gt, [_det(1, d, 0.9)], "segm")
    boundary = evaluate(gt, [_det(1, d, 0.9)], "boundary")
    gb, db = mask_to_boundary(g), mask_to_boundary(d)
    b_iou = (gb & db).sum() / (gb | db).sum()
    assert b_iou < 0.92
    n_pass = sum(t <= b_iou + 1e-12 for t in np.linspace(0.5, 0.95, 10))
    assert boundary["AP"] == pytest.approx(n_pass / 10)
    assert segm["AP"] == pytest.approx(0.9)  # 0.92 passes thresholds 0.50 .. 0.90


# ------------------------------------------------------------------------------------------------ pycocotools
def _random_set(seed=0, h=120, w=150):
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    aid = 1
    for i in range(1, 11):
        images.append({"id": i, "height": h, "width": w, "file_name": f"{i}.png"})
        for _ in range(int(rng.integers(0, 5))):
            m = np.zeros((h, w), np.uint8)
            y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
            m[y : y + int(rng.integers(2, 110)), x : x + int(rng.integers(2, 110))] = 1
            if rng.random() < 0.5:
                m[y + 3 : y + 9, :] = 0
            if not m.any():
                continue
            cat = int(rng.integers(1, 3))
            anns.append(
                {
                    "id": aid,
                    "image_id": i,
                    "category_id": cat,
                    "iscrowd": int(rng.random() < 0.1),
                    "area": float(m.sum()),
                    "bbox": rle.mask_bbox(m),
                    "segmentation": rle.encode(m),
                }
            )
            aid += 1
            for _ in range(int(rng.integers(0, 3))):
                mm = np.roll(m, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), (0, 1))
                if mm.any():
                    dets.append(_det(i, mm, float(rng.random())) | {"category_id": cat})
        for _ in range(int(rng.integers(0, 3))):
            mm = np.zeros((h, w), np.uint8)
            mm[
                int(rng.integers(0, 50)) : int(rng.integers(51, h)), int(rng.integers(0, 50)) : int(rng.integers(51, w))
            ] = 1
            dets.append(_det(i, mm, float(rng.random())) | {"category_id": int(rng.integers(1, 3))})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    return gt, dets


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_matches_pycocotools(iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = _random_set()
    res = json.loads(json.dumps(dets))
    if iou_type == "segm":  # as mmdet's CocoMetric: no bbox, so area ranges use mask areas
        for d in res:
            d.pop("bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(res)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = evaluate(gt, dets, iou_type)
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert ev.stats[0] > 0.05  # a non-trivial case
    np.testing.assert_allclose([ours[k] for k in keys], ev.stats, atol=1e-12)


# ------------------------------------------------------------------------------------------------ CLI
def test_evaluate_cli_with_predictions(tmp_path):
    masks = [[_rect(10, 50, 10, 60)], [_rect(0, 30, 0, 30), _rect(40, 80, 40, 80)]]
    gt = _gt(masks)
    dets = [_det(1, masks[0][0], 0.9), _det(2, masks[1][0], 0.8), _det(2, _rect(40, 80, 40, 70), 0.7)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(dets))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.evaluate",
            "--gt",
            str(tmp_path / "gt.json"),
            "--pred",
            str(tmp_path / "pred.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for t in ("bbox", "segm", "boundary"):
        for k in ("AP", "AP50", "AP75"):
            assert f"{t}_{k}" in out
    assert out["segm_AP50"] == pytest.approx(1.0)
    assert 0.0 < out["segm_AP"] < 1.0
    assert out["boundary_AP"] <= out["segm_AP"] + 1e-9


def test_evaluate_cli_max_dets_below_ten_and_two_stage_predictions(tmp_path, capsys):
    """--max-dets N is what AP uses, also below 10; what --save-pred writes for a two-stage run reads back."""
    from train.evaluate import main

    masks = [[_rect(10, 50, 10, 60)], [_rect(0, 30, 0, 30), _rect(40, 80, 40, 80)]]
    (tmp_path / "gt.json").write_text(json.dumps(_gt(masks)))
    # image 2: a high-scored false positive first, then the two true instances
    dets = [_det(1, masks[0][0], 0.9), _det(2, _rect(85, 99, 85, 99), 0.95), _det(2, masks[1][0], 0.8),
            _det(2, masks[1][1], 0.7)]
    (tmp_path / "pred.json").write_text(json.dumps(dets))

    def run(*extra):
        assert main(["--gt", str(tmp_path / "gt.json"), "--types", "segm", *extra]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    full = run("--pred", str(tmp_path / "pred.json"))
    one = run("--pred", str(tmp_path / "pred.json"), "--max-dets", "1")
    assert one["segm_AP50"] < full["segm_AP50"] - 0.2  # one detection per image: two instances of image 2 missed
    (tmp_path / "both.json").write_text(json.dumps({"stage1": dets[:2], "refined": dets}))
    both = run("--pred", str(tmp_path / "both.json"))
    assert both["refined"] == full and both["segm_AP"] == full["segm_AP"] and "stage1" in both



def test_use_cats_false_and_unsorted_max_dets_follow_pycocotools():
    """Without categories, pycocotools pools only detections of the ground truth's categories and concatenates
    them per category in ascending order (equal scores keep that order); max_dets are sorted before AP picks the
    largest. Each case was a reproduced difference (AP 0.5 vs 1.0, AR1 0.0 vs 1.0, AP at 10 instead of 100)."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def pyco(gt, dets, use_cats=1, max_dets=(1, 10, 100)):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "bbox")
        ev.params.useCats, ev.params.maxDets = use_cats, list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return ev.stats

    gt = dict(images=[dict(id=1, height=100, width=100)], categories=[dict(id=1), dict(id=2)],
              annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 20, 20], area=400, iscrowd=0)])
    unknown = [dict(image_id=1, category_id=99, score=0.9, bbox=[50, 50, 20, 20]),
               dict(image_id=1, category_id=1, score=0.8, bbox=[0, 0, 20, 20])]
    tied = [dict(image_id=1, category_id=2, score=0.9, bbox=[50, 50, 20, 20]),
            dict(image_id=1, category_id=1, score=0.9, bbox=[0, 0, 20, 20])]
    for dets in (unknown, tied):
        ours = evaluate(gt, dets, "bbox", EvalParams(use_cats=False))
        want = pyco(gt, dets, use_cats=0)
        assert abs(ours["AP"] - want[0]) < 1e-9 and abs(ours["AR1"] - want[6]) < 1e-9, (ours, want)
    many = dict(images=[dict(id=1, height=200, width=200)], categories=[dict(id=1)],
                annotations=[dict(id=i + 1, image_id=1, category_id=1, bbox=[15 * i, 15 * i, 10, 10], area=100,
                                  iscrowd=0) for i in range(12)])
    dets = [dict(image_id=1, category_id=1, score=0.9 - 0.01 * i, bbox=[15 * i, 15 * i, 10, 10]) for i in range(12)]
    ours = evaluate(many, dets, "bbox", EvalParams(max_dets=(100, 1, 10)))
    assert abs(ours["AP"] - pyco(many, dets, max_dets=(100, 1, 10))[0]) < 1e-9 and ours["AP"] == 1.0
