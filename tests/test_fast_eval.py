"""Fast evaluation: the vectorised RLE codec, the batched/sharded prediction dump and its torchrun commands give
the same results as the plain one-image-at-a-time path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cartoonseg
from cartoonseg import rle
from cartoonseg.config import detector_config
from cartoonseg.evaluation import evaluate_all
from cartoonseg.evaluation.predict import instances_to_results, predict_coco
from cartoonseg.sharding import RankInfo
from cartoonseg.training.coco import find_annotation, load_coco
from cartoonseg.training.toy import make_toy_coco

REPO = Path(__file__).resolve().parents[1]


def _masks(rng, n, h, w, kind):
    if kind == "random":
        m = rng.random((n, h, w)) < 0.5
    elif kind == "sparse":
        m = rng.random((n, h, w)) < 0.03
    elif kind == "full":
        m = np.ones((n, h, w), bool)
    else:  # blobs, some touching the first pixel and the borders
        m = np.zeros((n, h, w), bool)
        for i in range(n):
            y0, x0 = rng.integers(0, max(1, h - 1)), rng.integers(0, max(1, w - 1))
            m[i, y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = True
        m[0, 0, 0] = True
    m[-1] = False  # an empty mask in every stack
    return m


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (6, 1), (5, 3), (37, 53), (200, 3)])
@pytest.mark.parametrize("kind", ["random", "sparse", "full", "blobs"])
def test_encode_many_equals_encode_and_pycocotools(shape, kind):
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(hash((shape, kind)) % 2**32)
    masks = _masks(rng, 5, *shape, kind)
    batch = rle.encode_many(masks)
    assert len(batch) == len(masks)
    for m, r in zip(masks, batch):
        assert r == rle.encode(m)
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert r["counts"] == ref["counts"].decode("ascii") and r["size"] == list(ref["size"])
        np.testing.assert_array_equal(rle.decode(r), m.astype(np.uint8))
        assert rle.area(r) == int(m.sum())
    assert rle.encode_many(np.zeros((0, 4, 4), bool)) == []


def test_string_codec_large_counts_negative_deltas_and_errors():
    counts = [0, 5_000_000, 3, 17, 1, 2**30, 8]
    text = rle.counts_to_string(counts)
    assert rle.string_to_counts(text) == counts
    m = np.zeros((1, 3000, 3000), bool)
    m[0, 0, 0] = m[0, 2999, 2999] = True
    m[0, 5:2000, 7:9] = True
    (r,) = rle.encode_many(m)
    assert r == rle.encode(m[0])
    with pytest.raises(ValueError, match="truncated"):
        rle.string_to_counts("0P")  # 'P' = 48 + 0x20: a continuation with nothing after it
    with pytest.raises(ValueError, match="invalid character"):
        rle.string_to_counts("0 1")
    with pytest.raises(ValueError, match="sum"):
        rle.decode({"size": [2, 2], "counts": "05"})


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast_eval")
    make_toy_coco(root / "data", num_images=6, size=64, seed=3, name="val")
    coco = load_coco(find_annotation(root / "data", "val"))
    torch.manual_seed(0)
    det = cartoonseg.build_detector(detector_config("tiny", det_size=64, score_thr=0.0)).eval()
    path = cartoonseg.save_weights(det, root / "det.safetensors")
    return root, coco, det, path


def _reference(seg, coco):
    """The plain path: Segmenter.__call__ on one image at a time."""
    import cv2

    cats = sorted(int(c["id"]) for c in coco.raw["categories"])
    out = []
    for im in coco.raw["images"]:
        bgr = cv2.imread(str(Path(coco.image_root) / im["file_name"]))
        out += instances_to_results(seg(np.ascontiguousarray(bgr[:, :, ::-1])), im["id"], cats)
    return out


def test_predictions_equal_the_per_image_path_and_batches_agree(toy_set):
    _, coco, det, _ = toy_set
    seg = cartoonseg.Segmenter(det, det_size=64, score_thr=0.0, max_instances=20)
    ref = _reference(seg, coco)
    assert len(ref) > 20
    one = predict_coco(seg, coco.raw, coco.image_root)["final"]
    assert one == ref  # bit for bit, RLE strings included
    batched = predict_coco(seg, coco.raw, coco.image_root, batch_size=4)["final"]
    assert [(r["image_id"], r["category_id"]) for r in batched] == [(r["image_id"], r["category_id"]) for r in ref]
    scores = np.array([r["score"] for r in batched]) - np.array([r["score"] for r in ref])
    assert np.abs(scores).max() < 1e-4  # a batched convolution only reorders float roundings
    a, b = evaluate_all(coco.raw, one), evaluate_all(coco.raw, ref)
    assert a == b


def test_sharded_predictions_merge_to_the_same_results(toy_set, tmp_path):
    _, coco, det, _ = toy_set
    seg = cartoonseg.Segmenter(det, det_size=64, score_thr=0.0, max_instances=20)
    plain = predict_coco(seg, coco.raw, coco.image_root)
    work = tmp_path / "shards"
    kw = dict(work_dir=work, shard_size=2, fingerprint={"model": "toy"})
    assert predict_coco(seg, coco.raw, coco.image_root, rank=RankInfo(1, 2), **kw) is None
    done = sorted(p.name for p in work.glob("shard-*.json"))
    assert done == ["shard-000001.json"]  # 6 images, shards of 2: rank 1 owns shard 1
    merged = predict_coco(seg, coco.raw, coco.image_root, rank=RankInfo(0, 2), **kw)
    assert merged == plain
    assert not work.exists()  # merged, then removed
    # a folder of another run is refused rather than mixed
    predict_coco(seg, coco.raw, coco.image_root, rank=RankInfo(1, 2), **kw)
    with pytest.raises(ValueError, match="different run"):
        predict_coco(seg, coco.raw, coco.image_root, rank=RankInfo(0, 2), work_dir=work, shard_size=2,
                     fingerprint={"model": "other"})


def test_sharded_attach_predictions_equals_the_plain_one(toy_set, tmp_path):
    from cartoonseg.training.predictions import attach_predictions

    _, coco, det, _ = toy_set
    seg = cartoonseg.Segmenter(det, det_size=64, score_thr=0.0, max_instances=20)
    plain = attach_predictions(seg, coco.raw, coco.image_root, 0.05)
    assert any(a["pred_segmentations"] for a in plain["annotations"])
    kw = dict(work_dir=tmp_path / "w", shard_size=2)
    assert attach_predictions(seg, coco.raw, coco.image_root, 0.05, rank=RankInfo(1, 2), **kw) is None
    assert attach_predictions(seg, coco.raw, coco.image_root, 0.05, rank=RankInfo(0, 2), **kw) == plain


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def test_evaluate_and_dump_commands_under_torchrun_match_one_process(toy_set, tmp_path):
    from cartoonseg.evaluation import EvalParams
    from cartoonseg.training.predictions import attach_predictions

    root, coco, det, det_path = toy_set
    ann = find_annotation(root / "data", "val")
    seg = cartoonseg.Segmenter(det, det_size=64, score_thr=0.0, max_instances=20)
    expected_preds = predict_coco(seg, coco.raw, coco.image_root)["final"]
    expected = {k: round(v, 6) for k, v in evaluate_all(coco.raw, expected_preds, params=EvalParams(
        max_dets=(1, 10, 20))).items()}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = [*torchrun, "-m", "train.evaluate", "--gt", str(ann), "--images", str(coco.image_root), "--detector",
           str(det_path), "--det-size", "64", "--score-thr", "0.0", "--max-dets", "20", "--threads", "1",
           "--save-pred", str(tmp_path / "p.json"), "--shard-size", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # rank 0 merges and reports
    assert json.loads(reports[0]) == expected
    assert json.loads((tmp_path / "p.json").read_text()) == expected_preds
    assert not (tmp_path / "p.json.shards").exists()

    # the dump command (in this process: same sharded path as above, one rank)
    from train.dump_predictions import main as dump_main

    out = tmp_path / "with_preds.json"
    assert dump_main(["--data", str(ann), "--detector", str(det_path), "--out", str(out), "--score-thr", "0.0",
                      "--iou-thr", "0.05", "--work-dir", str(tmp_path / "dump_shards"), "--shard-size", "2"]) == 0
    seg_dump = cartoonseg.Segmenter(det, score_thr=0.0)  # the command's settings (Segmenter defaults)
    assert json.loads(out.read_text()) == attach_predictions(seg_dump, coco.raw, coco.image_root, 0.05)
    assert not (tmp_path / "dump_shards").exists()
