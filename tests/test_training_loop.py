"""Training: augmentations, optimisation on a tiny synthetic set, exact resume, export loading, schedules, EMA."""

from __future__ import annotations

import json
from pathlib import Path
import math
import re

import cv2
import numpy as np
import pytest
import torch

import cartoonseg
from cartoonseg.config import detector_config
from cartoonseg.training.assigner import DynamicSoftLabelAssigner
from cartoonseg.training.coco import find_annotation, instance_masks, load_coco
from cartoonseg.training.det_data import DetAugConfig, DetectionTrainSet, boxes_from_masks, collate_detection, mosaic
from cartoonseg.training.detector import DetectorTrainConfig, train_detector
from cartoonseg.training.optim import ExpMomentumEMA, WarmupCosine, init_rtmdet_head, param_groups
from cartoonseg.training.refine_data import RefineAugConfig, RefineTrainSet, simulate_coarse_mask
from cartoonseg.training.refiner import RefinerTrainConfig, train_refiner
from cartoonseg.training.rtmdet_loss import RTMDetInsLossConfig, rtmdet_ins_loss
from cartoonseg.training.state import load_training_state
from cartoonseg.training.toy import make_toy_coco


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: one thread is faster and keeps runs bit-reproducible on a shared machine
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_coco(root, num_images=8, size=64, seed=0, box_only_every=5)
    return root


def _det_cfg(toy, out, **kw):
    base = dict(
        train_ann=str(find_annotation(toy)),
        out_dir=str(out),
        preset="tiny",
        img_size=64,
        epochs=2,
        batch_size=2,
        lr=2e-3,
        warmup_iters=2,
        num_workers=0,
        log_interval=1,
        device="cpu",
        seed=0,
    )
    base.update(kw)
    return DetectorTrainConfig(**base)


# ----------------------------------------------------------------------------------------------- data
def test_coco_reader_and_ignore_mask_rule(toy):
    coco = load_coco(find_annotation(toy))
    assert coco.num_classes == 1 and len(coco) == 8
    flags = []
    for im in coco.images:
        masks, ignore = instance_masks(im)
        for m, ig, a in zip(masks, ignore, im.annotations):
            if ig:  # box-only annotation -> filled box
                x1, y1, x2, y2 = (int(round(v)) for v in a.box)
                assert m.sum() == (x2 - x1) * (y2 - y1)
            flags.append(bool(ig))
    assert any(flags) and not all(flags)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d["annotations"][0].pop("bbox"), "annotation 1 lacks the field 'bbox'"),
    (lambda d: d["annotations"][0].pop("image_id"), "annotation 1 lacks the field 'image_id'"),
    (lambda d: d["images"][0].pop("height"), "image 1 lacks the field 'height'"),
    (lambda d: d["annotations"][0].__setitem__("bbox", "x"), "annotation 1 has a malformed field"),
    (lambda d: d["images"][1].__setitem__("id", None), "an image has a malformed field"),
    (lambda d: d.__setitem__("images", {"a": 1}), "is not a COCO instances file"),
])
def test_a_malformed_coco_file_is_one_value_error_naming_the_record(tmp_path, damage, message):
    """A COCO file lacking a required field used to raise a bare KeyError (a traceback from the training CLIs)."""
    path = make_toy_coco(tmp_path, num_images=2, size=32, seed=0)
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_coco(path)
    assert str(path) in str(info.value)


def test_mosaic_and_pipeline_keep_masks_boxes_consistent(toy):
    ds = DetectionTrainSet(load_coco(find_annotation(toy)), DetAugConfig(img_size=64), seed=3)
    rng = np.random.default_rng(0)
    m = mosaic([ds.load(i) for i in range(4)], 64, rng)
    assert m["img"].shape == (128, 128, 3) and m["masks"].shape[1:] == (128, 128)
    assert len(m["labels"]) == len(m["ignore_mask"]) == len(m["masks"])
    for epoch in (0, 1):
        ds.set_epoch(epoch, strong=epoch == 0)
        for i in range(4):
            s = ds.sample(i)
            assert s["img"].shape == (64, 64, 3) and s["img"].dtype == np.uint8
            np.testing.assert_array_equal(s["boxes"], boxes_from_masks(s["masks"]))
            w = s["boxes"][:, 2] - s["boxes"][:, 0]
            assert (w >= 1).all()
    # determinism: same (seed, epoch, index) -> same sample
    ds.set_epoch(0, strong=True)
    a, b = ds.sample(2), ds.sample(2)
    np.testing.assert_array_equal(a["img"], b["img"])
    batch = collate_detection([ds[0], ds[1]])
    assert batch["img"].shape == (2, 3, 64, 64) and batch["img"].dtype == torch.uint8


class _ScriptedRng:
    """The three kinds of draw mixup makes, answered from a script (checks the ranges asked for)."""

    def __init__(self, jit, flip_u, offsets):
        self.jit, self.flip_u, self.offsets = jit, flip_u, list(offsets)

    def uniform(self, lo, hi):
        assert lo <= self.jit <= hi
        return self.jit

    def random(self):
        return self.flip_u

    def integers(self, lo, hi):
        value = self.offsets.pop(0)
        assert lo == 0 and 0 <= value < hi  # numpy.random.randint(0, extra) as mmdet draws it: extra excluded
        return value


def _mmdet_cached_mixup(ori_img, retrieve_img, retrieve_boxes, size, jit, is_flip, y_offset, x_offset):
    """mmdet CachedMixUp.transform (mmdet/datasets/transforms/transforms.py, steps 1-8) with its random draws given:
    returns the mixed image and the partner's boxes (xyxy) that it keeps."""
    out_img = np.ones((size, size, 3), np.uint8) * 114
    scale_ratio = min(size / retrieve_img.shape[0], size / retrieve_img.shape[1])
    retrieve_img = cv2.resize(retrieve_img, (int(retrieve_img.shape[1] * scale_ratio),
                                             int(retrieve_img.shape[0] * scale_ratio)))  # mmcv.imresize: bilinear
    out_img[:retrieve_img.shape[0], :retrieve_img.shape[1]] = retrieve_img
    scale_ratio *= jit
    out_img = cv2.resize(out_img, (int(out_img.shape[1] * jit), int(out_img.shape[0] * jit)))
    if is_flip:
        out_img = out_img[:, ::-1, :]
    origin_h, origin_w = out_img.shape[:2]
    target_h, target_w = ori_img.shape[:2]
    padded_img = np.zeros((max(origin_h, target_h), max(origin_w, target_w), 3)).astype(np.uint8)
    padded_img[:origin_h, :origin_w] = out_img
    cropped = padded_img[y_offset:y_offset + target_h, x_offset:x_offset + target_w]
    b = retrieve_boxes.astype(np.float64) * scale_ratio
    b[:, 0::2] = b[:, 0::2].clip(0, origin_w)
    b[:, 1::2] = b[:, 1::2].clip(0, origin_h)
    if is_flip:
        b = np.stack([origin_w - b[:, 2], b[:, 1], origin_w - b[:, 0], b[:, 3]], 1)
    b -= [x_offset, y_offset, x_offset, y_offset]
    b[:, 0::2] = b[:, 0::2].clip(0, target_w)
    b[:, 1::2] = b[:, 1::2].clip(0, target_h)
    inside = (b[:, 0] < target_w) & (b[:, 1] < target_h) & (b[:, 2] > 0) & (b[:, 3] > 0)
    mixed = (0.5 * ori_img.astype(np.float32) + 0.5 * cropped.astype(np.float32)).astype(np.uint8)
    return mixed, b[inside]


@pytest.mark.parametrize("jit, flip_u, offsets, partner_hw", [
    (1.5, 0.25, [7, 20], (64, 64)),  # scale jitter up, flipped, cropped at an offset
    (1.5, 0.75, [31, 0], (64, 64)),  # the largest offset mmdet can draw (extra excluded)
    (0.5, 0.25, [], (64, 64)),  # jitter down: the zero padding of mmdet's crop canvas shows
    (1.0, 0.25, [], (64, 32)),  # the stock recipe's (1.0, 1.0): a narrow partner flips with its whole canvas
])
def test_mixup_partner_goes_where_mmdet_cached_mixup_puts_it(jit, flip_u, offsets, partner_hw):
    """The mixup partner gets mmdet CachedMixUp's geometry: keep-ratio fit into a 114 canvas, scale jitter
    (ratio_range), flip of the whole canvas, zero padding and a random crop; pixels and the partner's boxes match
    a transcription of mmdet's code under the same draws. It used to be only fitted and flipped in place."""
    from cartoonseg.training.det_data import mixup

    size = 64
    g = np.random.default_rng(5)
    ph, pw = partner_hw
    rects = [(8, 16, 24, 40), (40, 2, 62, 12), (0, 50, 6, 60)]  # xyxy, on the partner's pixel grid
    masks = np.zeros((len(rects), ph, pw), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(rects):
        masks[k, y0:y1, x0:x1] = 1
    masks = masks[masks.any(axis=(1, 2))]
    partner = {"img": g.integers(0, 256, (ph, pw, 3), dtype=np.uint8), "masks": masks,
               "boxes": boxes_from_masks(masks), "labels": np.arange(len(masks), dtype=np.int64) + 1,
               "ignore_mask": np.zeros(len(masks), bool)}
    own = np.zeros((1, size, size), np.uint8)
    own[0, 30:50, 10:20] = 1
    sample = {"img": g.integers(0, 256, (size, size, 3), dtype=np.uint8), "masks": own,
              "boxes": boxes_from_masks(own), "labels": np.zeros(1, np.int64), "ignore_mask": np.zeros(1, bool)}
    out = mixup(sample, partner, _ScriptedRng(jit, flip_u, offsets), flip_prob=0.5, ratio_range=(0.5, 1.5))
    y_off, x_off = (offsets + [0, 0])[:2]
    want_img, want_boxes = _mmdet_cached_mixup(sample["img"], partner["img"], partner["boxes"], size, jit,
                                               flip_u < 0.5, y_off, x_off)
    np.testing.assert_array_equal(out["img"], want_img)
    np.testing.assert_array_equal(out["boxes"][0], sample["boxes"][0])
    np.testing.assert_allclose(out["boxes"][1:], want_boxes, atol=1e-4)
    assert len(out["labels"]) == len(out["masks"]) == len(out["ignore_mask"]) == 1 + len(want_boxes)
    np.testing.assert_array_equal(out["boxes"], boxes_from_masks(out["masks"]))


def test_mixup_jitter_runs_in_the_pipeline_and_an_empty_partner_is_not_mixed_in(toy):
    from cartoonseg.training.det_data import mixup

    aug = DetAugConfig(img_size=64, mixup_ratio_range=(0.5, 1.5))
    ds = DetectionTrainSet(load_coco(find_annotation(toy)), aug, seed=1)
    for i in range(4):
        s = ds.sample(i)
        assert s["img"].shape == (64, 64, 3)
        np.testing.assert_array_equal(s["boxes"], boxes_from_masks(s["masks"]))
    sample = ds.sample(0)
    empty = {"img": np.zeros((64, 64, 3), np.uint8), "masks": np.zeros((0, 64, 64), np.uint8),
             "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64), "ignore_mask": np.zeros(0, bool)}
    assert mixup(sample, empty, np.random.default_rng(0)) is sample


def test_an_empty_mixup_partner_is_redrawn_up_to_15_times_as_mmdet_does(toy, monkeypatch):
    """mmdet ``CachedMixUp.get_indexes`` draws up to ``max_iters`` (15) partners until one has a box and skips the
    mixup only when all were empty; a single empty draw (a random crop missing every instance) skipped it here."""
    aug = DetAugConfig(img_size=64)
    ds = DetectionTrainSet(load_coco(find_annotation(toy)), aug, seed=3)
    real = DetectionTrainSet._strong_sample
    main, partner = (next(x for x in (real(ds, i, np.random.default_rng(k)) for k in range(100)) if len(x["labels"]))
                     for i in (0, 1))
    empty = dict(partner, masks=partner["masks"][:0], boxes=partner["boxes"][:0], labels=partner["labels"][:0],
                 ignore_mask=partner["ignore_mask"][:0])

    def scripted(answers):
        calls = []

        def fake(self, index, rng):
            calls.append(index)
            return answers[min(len(calls) - 1, len(answers) - 1)]
        monkeypatch.setattr(DetectionTrainSet, "_strong_sample", fake)
        return calls

    calls = scripted([main, empty, empty, empty, partner])  # the sample itself, then partner draws
    s = ds.sample(0)
    assert len(calls) == 5 and len(s["labels"]) > len(main["labels"])  # the fourth partner was mixed in
    assert not np.array_equal(s["img"], main["img"])
    calls = scripted([main] + [empty] * 20)
    s = ds.sample(0)
    assert len(calls) == 1 + 15 and len(s["labels"]) == len(main["labels"])  # all 15 empty: not mixed
    np.testing.assert_array_equal(s["img"], main["img"])
    with pytest.raises(ValueError, match="mixup_max_iters"):
        DetAugConfig(mixup_max_iters=0)


def test_images_without_instances_train_in_both_pipelines(tmp_path):
    """An image with no annotation (a background, or a synthetic image whose instances were all removed) gives an
    empty sample in the mosaic and in the no-mosaic pipeline, and a batch of only such images trains."""
    path = make_toy_coco(tmp_path, num_images=4, size=64, seed=0)
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == 1]
    path.write_text(json.dumps(data))
    ds = DetectionTrainSet(load_coco(path), DetAugConfig(img_size=64), seed=0)
    empty = [i for i, im in enumerate(ds.coco.images) if not im.annotations]
    for strong in (False, True):
        ds.set_epoch(0, strong=strong)
        for i in empty:
            s = ds.sample(i)
            assert s["img"].shape == (64, 64, 3) and s["masks"].shape[1:] == (64, 64)
    ds.set_epoch(0, strong=False)
    assert [len(ds.sample(i)["labels"]) for i in empty] == [0] * len(empty)
    data["annotations"] = []  # a run whose batches hold no instance at all
    path.write_text(json.dumps(data))
    summary = train_detector(_det_cfg(tmp_path, tmp_path / "run", epochs=1, mosaic=False, mixup=False,
                                      train_ann=str(path)))
    assert summary["finished"] and summary["last"]["num_pos"] == 0.0 and math.isfinite(summary["last"]["loss"])


def test_coarse_mask_simulation_rules():
    gt = np.zeros((40, 40), np.uint8)
    gt[10:30, 12:20] = 1
    rng = np.random.default_rng(0)
    rect = simulate_coarse_mask(gt, (5.0, 6.0, 25.0, 35.0), [], rng, ins_rect_prob=1.0, aug_ins_prob=0.0)
    assert rect.sum() == 20 * 29 and rect[6:35, 5:25].all()
    pred = np.zeros_like(gt)
    pred[0:5, 0:5] = 1
    assert (simulate_coarse_mask(gt, (0, 0, 1, 1), [pred], rng, 0.0, 0.0) == pred).all()
    assert (simulate_coarse_mask(gt, (0, 0, 1, 1), [], rng, 0.0, 0.0) == gt).all()
    sizes = {
        int(simulate_coarse_mask(gt, (0, 0, 1, 1), [], np.random.default_rng(s), 0.0, 1.0).sum()) for s in range(20)
    }
    assert min(sizes) < gt.sum() < max(sizes)  # both erosion and dilation happen


def test_refine_dataset_sample(toy):
    ds = RefineTrainSet(load_coco(find_annotation(toy)), RefineAugConfig(size=48), seed=0)
    item = ds[0]
    assert item["x"].shape == (4, 48, 48) and item["mask"].shape == (1, 48, 48)
    assert 0.0 <= float(item["x"].min()) and float(item["x"].max()) <= 1.0


# ----------------------------------------------------------------------------------------------- optimisation
def _fixed_batch(toy, n=4):
    torch.manual_seed(0)
    ds = DetectionTrainSet(load_coco(find_annotation(toy)), DetAugConfig(img_size=64, mosaic=False), seed=0)
    batch = collate_detection([ds[i] for i in range(n)])
    model = cartoonseg.build_detector(detector_config("tiny", det_size=64)).train()
    init_rtmdet_head(model)
    return model, model.normalize(batch["img"]), batch["targets"]


class _FrozenAssigner:
    """Replays the first assignment, so the loss is a smooth function of the weights (targets fixed)."""

    def __init__(self):
        self.inner = DynamicSoftLabelAssigner()
        self.cache = []
        self.calls = 0

    def __call__(self, *args):
        if self.calls < len(self.cache):
            res = self.cache[self.calls]
        else:
            res = self.inner(*args)
            self.cache.append(res)
        self.calls += 1
        return res


def test_one_training_step_changes_weights_and_lowers_loss(toy):
    model, x, targets = _fixed_batch(toy)
    assigner = _FrozenAssigner()
    cfg = RTMDetInsLossConfig(assigner=assigner)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)  # first Adam step ~ sign descent
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss0 = rtmdet_ins_loss(model, model(x), targets, cfg)["loss"]
    opt.zero_grad()
    loss0.backward()
    opt.step()
    assigner.calls = 0
    with torch.no_grad():
        loss1 = rtmdet_ins_loss(model, model(x), targets, cfg)["loss"]
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) > 0.9 * len(before), sorted(set(before) - set(changed))[:10]
    assert float(loss1) < float(loss0.detach())


def test_optimisation_run_on_fixed_batch_lowers_loss(toy):
    # With live assignment early RTMDet training first *raises* the QFL term (its soft targets are the box IoUs,
    # which start near 0), so the total is not monotone; with the assignment of step 0 replayed the objective is
    # fixed and every term must fall.
    model, x, targets = _fixed_batch(toy)
    assigner = _FrozenAssigner()
    cfg = RTMDetInsLossConfig(assigner=assigner)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    hist = []
    for _ in range(25):
        assigner.calls = 0
        out = rtmdet_ins_loss(model, model(x), targets, cfg)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        assert torch.isfinite(out["loss"])
        hist.append({k: float(v.detach()) for k, v in out.items()})
    first, last = hist[0], hist[-1]
    assert last["loss"] < 0.7 * first["loss"]
    assert last["loss_mask"] < first["loss_mask"] and last["loss_bbox"] < first["loss_bbox"]
    assert last["loss_cls"] < max(h["loss_cls"] for h in hist)


def test_detector_run_resume_exactly_and_export_loads(toy, tmp_path):
    full = train_detector(_det_cfg(toy, tmp_path / "full", max_iters=None))
    assert full["finished"] and full["global_step"] == 8  # 8 images / batch 2 x 2 epochs
    log = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 8 and all(math.isfinite(r["loss"]) for r in log)
    # killed after 3 steps (mid-epoch), resumed with the same command
    part = train_detector(_det_cfg(toy, tmp_path / "part", max_iters=3))
    assert not part["finished"] and part["global_step"] == 3
    state = load_training_state(tmp_path / "part" / "detector_last")
    assert state["progress"]["epoch"] == 0 and state["progress"]["iter"] == 3
    resumed = train_detector(_det_cfg(toy, tmp_path / "part"))
    assert resumed["finished"] and resumed["global_step"] == 8
    assert resumed["state_digest"] == full["state_digest"]
    a = load_training_state(tmp_path / "full" / "detector_last")
    b = load_training_state(tmp_path / "part" / "detector_last")
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    for idx in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][idx]["exp_avg"], b["optimizer"]["state"][idx]["exp_avg"])
    # the export is the EMA model in the node format and loads through the public loader
    det = cartoonseg.load_detector(full["export"])
    assert det.config.det_size == 64
    for k, v in det.state_dict().items():
        torch.testing.assert_close(v, a["ema"][k].to(v.dtype), rtol=0, atol=0)
    inst = cartoonseg.Segmenter(det, score_thr=0.0)(np.zeros((50, 70, 3), np.uint8))
    assert inst.image_size == (50, 70)


def test_step_limit_reruns_train_nothing_more_and_a_limit_at_the_end_exports(toy, tmp_path):
    """The same command with --max-iters again trains no extra step; a limit equal to the run's length finishes
    (and exports) like a run without one; a different process count is a changed setting, refused on resume."""
    for _ in range(2):
        part = train_detector(_det_cfg(toy, tmp_path / "limit", max_iters=3))
        assert not part["finished"] and part["global_step"] == 3
    steps = [r["step"] for r in map(json.loads, (tmp_path / "limit" / "log.jsonl").read_text().splitlines())
             if "loss" in r]
    assert steps == [1, 2, 3]
    whole = train_detector(_det_cfg(toy, tmp_path / "exact", max_iters=8))  # 2 epochs x 4 steps
    assert whole["finished"] and whole["global_step"] == 8 and Path(whole["export"]).is_file()
    import cartoonseg.training.engine as engine

    record = load_training_state(tmp_path / "limit" / "detector_last")["config"]
    assert record["world_size"] == 1
    changed = engine.config_changes(record, dict(record, world_size=2))
    assert changed == ["world_size: 1 -> 2"]


def test_refiner_resume_keeps_the_gt_encoder_log_and_no_resume_starts_over(toy, tmp_path):
    def cfg(**kw):
        return RefinerTrainConfig(train_ann=str(find_annotation(toy)), out_dir=str(tmp_path), preset="tiny", size=32,
                                  epochs=1, gt_epochs=1, batch_size=2, num_workers=0, log_interval=1, device="cpu",
                                  ckpt_interval=1, **kw)

    def lines():
        return [(r["name"], r["step"]) for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
                if "loss" in r]

    train_refiner(cfg(max_iters=1))  # the GT encoder stops after 1 of its 4 steps
    train_refiner(cfg())  # resumed: the encoder finishes, the refiner runs
    before = lines()
    assert [s for n, s in before if n == "gt_encoder"] == [1, 2, 3, 4]
    assert [s for n, s in before if n == "refiner"] == [1, 2, 3, 4]
    train_refiner(cfg(max_iters=2, resume=False))  # over again: both phases from scratch, old lines gone
    assert lines() == [("gt_encoder", 1), ("gt_encoder", 2)]
    train_refiner(cfg())  # resumed at refiner step 0 after the encoder: the encoder's lines stay
    assert [s for n, s in lines() if n == "gt_encoder"] == [1, 2, 3, 4]


def test_a_finished_gt_encoder_is_reused_only_with_its_own_settings(toy, tmp_path):
    """A run killed after its GT-encoder phase but before the refiner's first checkpoint, rerun with other settings,
    used to reuse the encoder trained with the old ones silently (or failed deep in the loss for another preset);
    the changes are refused as for any resume, and a --gt-encoder of another width is refused by name."""
    from cartoonseg.training.state import remove_checkpoint

    def cfg(**kw):
        base = dict(train_ann=str(find_annotation(toy)), out_dir=str(tmp_path / "run"), preset="tiny", size=32,
                    epochs=1, gt_epochs=1, batch_size=4, num_workers=0, log_interval=1, device="cpu")
        return RefinerTrainConfig(**{**base, **kw})

    first = train_refiner(cfg())
    assert first["finished"]
    remove_checkpoint(tmp_path / "run" / "refiner_last")  # as if killed in the refiner's first epoch
    with pytest.raises(ValueError, match=r"gt_encoder_last\.json was trained with other settings.*run\.gt_epochs: "
                                         r"1 -> 2"):
        train_refiner(cfg(gt_epochs=2))
    assert train_refiner(cfg(max_iters=1))["global_step"] == 1  # the same settings reuse it
    with pytest.raises(ValueError, match=r"trained for a refiner of width 0\.125; the preset 'isnet' has width 1\.0"):
        train_refiner(cfg(out_dir=str(tmp_path / "other"), preset="isnet", gt_encoder=first["gt_encoder"]))


def test_refiner_two_phases_and_export_loads(toy, tmp_path):
    cfg = RefinerTrainConfig(
        train_ann=str(find_annotation(toy)),
        out_dir=str(tmp_path),
        preset="tiny",
        size=32,
        epochs=1,
        gt_epochs=1,
        batch_size=4,
        num_workers=0,
        log_interval=1,
        device="cpu",
    )
    summary = train_refiner(cfg)
    assert summary["finished"] and summary["global_step"] == 2 and summary["gt_encoder_steps"] == 2
    assert (tmp_path / "gt_encoder.safetensors").is_file()
    with pytest.raises(cartoonseg.CheckpointError, match="GT encoder of a refiner training run"):
        cartoonseg.load_refiner(tmp_path / "gt_encoder.safetensors")  # said plainly, not "corrupt metadata"
    assert summary["last"]["loss_is"] > 0  # intermediate supervision active
    ref = cartoonseg.load_refiner(summary["export"])
    assert ref.config.in_ch == 4
    sides, _ = ref(torch.zeros(1, 4, 32, 32))
    assert sides[0].shape == (1, 1, 32, 32)


def test_a_folder_is_a_training_run_only_by_our_own_marker_and_a_users_log_is_never_rewritten(toy, tmp_path):
    """A file named ``log.jsonl`` does not make a folder a training run: such a folder is refused before anything
    is written, and the user's log keeps its lines (it used to be trimmed to nothing and checkpoints landed there)."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "log.jsonl").write_text("day 1\nday 2\n")
    (proj / "notes.txt").write_text("x\n")
    with pytest.raises(ValueError, match="not a cartoonseg training run"):
        train_detector(_det_cfg(toy, proj, epochs=1))
    (proj / "notes.txt").unlink()  # a lone log.jsonl is not ours either
    with pytest.raises(ValueError, match="not a cartoonseg training run"):
        train_detector(_det_cfg(toy, proj, epochs=1))
    assert sorted(p.name for p in proj.iterdir()) == ["log.jsonl"]
    assert (proj / "log.jsonl").read_text() == "day 1\nday 2\n"
    from cartoonseg.training.engine import RUN_MARKER, check_training_folder, claim_training_folder

    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "detector_last.json").write_text('{"step": 1}')  # named like a checkpoint, not written by us
    with pytest.raises(ValueError, match="not a cartoonseg training run"):
        check_training_folder(fake)
    # a run killed before its first checkpoint (marker and log only) is ours: the rerun resumes there
    early = tmp_path / "early"
    claim_training_folder(early)
    (early / "log.jsonl").write_text('{"name": "detector", "step": 1}\n')
    check_training_folder(early)
    assert (early / RUN_MARKER).is_file()


def test_refiner_no_resume_checks_the_folder_before_deleting_anything(toy, tmp_path):
    mf2 = tmp_path / "mf2"
    mf2.mkdir()
    (mf2 / "gt_encoder.safetensors").write_text("w\n")
    (mf2 / "thesis.tex").write_text("t\n")
    cfg = RefinerTrainConfig(train_ann=str(find_annotation(toy)), out_dir=str(mf2), preset="tiny", size=32, epochs=1,
                             gt_epochs=1, batch_size=2, num_workers=0, max_iters=1, device="cpu", resume=False)
    with pytest.raises(ValueError, match="not a cartoonseg training run"):
        train_refiner(cfg)
    assert {p.name: p.read_text() for p in mf2.iterdir()} == {"gt_encoder.safetensors": "w\n", "thesis.tex": "t\n"}


def test_an_input_is_never_the_export(toy, tmp_path):
    """``--init OUT/detector.safetensors`` (and a refiner's ``--gt-encoder OUT/refiner.safetensors``) is refused
    before training: the export would write over the weights the run starts from."""
    run1 = tmp_path / "run1"
    first = train_detector(_det_cfg(toy, run1, epochs=1))
    export = Path(first["export"])
    before = export.read_bytes()
    with pytest.raises(ValueError, match="it is an input"):
        train_detector(_det_cfg(toy, run1, epochs=1, init=str(export), resume=False))
    assert export.read_bytes() == before
    assert load_training_state(run1 / "detector_last")["progress"]["global_step"] == 4  # nothing trained again
    ref = RefinerTrainConfig(train_ann=str(find_annotation(toy)), out_dir=str(run1), preset="tiny", size=32, epochs=1,
                             gt_encoder=str(run1 / "refiner.safetensors"), batch_size=2, num_workers=0, device="cpu")
    with pytest.raises(ValueError, match="it is an input"):
        train_refiner(ref)


def test_training_cli_errors_are_one_line(toy, tmp_path, capsys):
    """A refused or unwritable ``--out`` ends the training scripts with one ``error:`` line and status 2."""
    from train import train_detector as det_cli
    from train import train_refiner as ref_cli

    blocker = tmp_path / "file"
    blocker.write_text("x")
    common = ["--data", str(toy), "--epochs", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu"]
    assert det_cli.main([*common, "--out", str(blocker / "run"), "--preset", "tiny", "--img-size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    mf2 = tmp_path / "mf2"
    mf2.mkdir()
    (mf2 / "gt_encoder.safetensors").write_text("w\n")
    (mf2 / "thesis.tex").write_text("t\n")
    assert ref_cli.main([*common, "--out", str(mf2), "--preset", "tiny", "--size", "32", "--gt-epochs", "1",
                         "--max-iters", "1", "--no-resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training output folder") and err.count("\n") == 1
    assert (mf2 / "gt_encoder.safetensors").read_text() == "w\n"


def test_an_unreadable_image_in_a_data_worker_is_one_error_line(tmp_path, capsys):
    """A corrupt training image read by a DataLoader worker (the default --workers 4) ends the run with the same
    one ``error:`` line as without workers, not torch's re-raised worker traceback."""
    from train import train_detector as det_cli
    from train import train_refiner as ref_cli

    make_toy_coco(tmp_path / "data", num_images=4, size=64, seed=0)
    for image in (tmp_path / "data" / "train").iterdir():
        image.write_bytes(b"not an image")
    common = ["--data", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "2", "--workers", "1",
              "--device", "cpu", "--no-check-images"]  # the file read in a worker (the up-front check: below)
    assert det_cli.main([*common, "--out", str(tmp_path / "det"), "--preset", "tiny", "--img-size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read image ") and err.count("\n") == 1 and "Traceback" not in err
    assert ref_cli.main([*common, "--out", str(tmp_path / "ref"), "--preset", "tiny", "--size", "32",
                         "--gt-epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read image ") and err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_images_stop_training_before_it_starts_listing_them(tmp_path, capsys):
    """Every listed image is checked once before training (headers and file ends): an empty file, a non-image, a
    PNG cut short and an image of another size than the annotation's stop both trainers at the start with one
    error naming each file and its fault; before, each was found only when first sampled (hours into a run)."""
    from PIL import Image

    from cartoonseg.training.coco import check_images
    from train import train_detector as det_cli
    from train import train_refiner as ref_cli

    ann = make_toy_coco(tmp_path / "data", num_images=6, size=64, seed=0)
    coco = load_coco(ann)
    check_images(coco.images, progress=False)  # a sound set passes
    paths = [im.path for im in coco.images]
    paths[0].write_bytes(b"")
    paths[1].write_bytes(b"not an image")
    paths[2].write_bytes(paths[2].read_bytes()[:-40])  # an interrupted copy: the header is intact
    Image.new("RGB", (48, 64)).save(paths[3])
    with pytest.raises(ValueError) as err:
        check_images(load_coco(ann).images, progress=False, show=3)
    msg = str(err.value)
    assert msg.startswith("4 of 6 training images cannot be used: ")
    assert f"{paths[0]} is an empty file" in msg and f"{paths[1]} is not an image" in msg
    assert f"{paths[2]} is truncated (no PNG end chunk)" in msg and "... and 1 more" in msg
    with pytest.raises(ValueError, match=re.escape(f"{paths[3]} is 48x64 but the annotation file says 64x64")):
        check_images(load_coco(ann).images[3:], progress=False)

    common = ["--data", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "2", "--workers", "0",
              "--device", "cpu"]
    assert det_cli.main([*common, "--out", str(tmp_path / "det"), "--preset", "tiny", "--img-size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 4 of 6 training images cannot be used: ") and err.count("\n") == 1
    assert not list((tmp_path / "det").glob("detector_last*"))  # stopped before the first step
    assert ref_cli.main([*common, "--out", str(tmp_path / "ref"), "--preset", "tiny", "--size", "32",
                         "--gt-epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "training images cannot be used" in err and err.count("\n") == 1


def test_check_images_full_decodes_and_finds_damage_inside_a_complete_file(tmp_path, capsys):
    """A PNG damaged inside its compressed data (header and end intact) passes the fast check and failed only
    when first sampled, with an error that did not say how to find such files. ``--check-images full`` decodes
    every image once before training and stops the run there; the sampling error names the file and the flag."""
    from cartoonseg.training.coco import check_images, read_image_bgr
    from train import train_detector as det_cli

    ann = make_toy_coco(tmp_path / "data", num_images=4, size=64, seed=0)
    path = load_coco(ann).images[1].path
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8  # the compressed pixels
    data[start : start + 24] = bytes(b ^ 0x5A for b in data[start : start + 24])
    path.write_bytes(bytes(data))
    assert cv2.imread(str(path)) is None  # the trainers cannot read it
    check_images(load_coco(ann).images, progress=False)  # headers and end are sound: the fast check passes
    with pytest.raises(ValueError, match=re.escape(f"1 of 4 training images cannot be used: {path} cannot be "
                                                   "decoded (damaged data inside the file)")):
        check_images(load_coco(ann).images, progress=False, full=True)
    with pytest.raises(ValueError, match=re.escape(f"cannot read image {path}") + ".*--check-images full"):
        read_image_bgr(path)

    common = ["--data", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "2", "--workers", "0",
              "--device", "cpu", "--preset", "tiny", "--img-size", "64"]
    assert det_cli.main([*common, "--out", str(tmp_path / "det"), "--check-images", "full"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 of 4 training images cannot be used: ") and err.count("\n") == 1, err
    assert not list((tmp_path / "det").glob("detector_last*"))  # stopped before the first step
    with pytest.raises(ValueError, match="check_images must be one of"):
        DetectorTrainConfig(train_ann=str(ann), out_dir=str(tmp_path / "x"), check_images="deep")


def test_the_image_check_accepts_exif_turned_jpegs_and_trailing_bytes(tmp_path):
    """No false alarm on sound files: a JPEG whose EXIF orientation turns it (OpenCV reads it turned, so either size
    may be in the annotation file) and a JPEG with a few bytes after its end marker."""
    from PIL import Image

    from cartoonseg.training.coco import CocoImage, check_images

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 24), (200, 10, 10)).save(tmp_path / "turned.jpg", exif=exif)
    Image.new("RGB", (40, 24)).save(tmp_path / "padded.jpg")
    with open(tmp_path / "padded.jpg", "ab") as fh:
        fh.write(b"\0" * 100)
    assert cv2.imread(str(tmp_path / "turned.jpg")).shape[:2] == (40, 24)  # read turned: 24 wide, 40 high
    # CocoImage(id, path, height, width, annotations)
    images = [CocoImage(1, tmp_path / "turned.jpg", 24, 40, []), CocoImage(2, tmp_path / "turned.jpg", 40, 24, []),
              CocoImage(3, tmp_path / "padded.jpg", 24, 40, [])]
    check_images(images, progress=False)
    with pytest.raises(ValueError, match="padded.jpg is 40x24 but the annotation file says 24x40"):
        check_images([CocoImage(3, tmp_path / "padded.jpg", 40, 24, [])], progress=False)


# ----------------------------------------------------------------------------------------------- schedule, EMA
def test_warmup_cosine_schedule_values():
    s = WarmupCosine(iters_per_epoch=10, max_epochs=4, warmup_iters=5, warmup_ratio=0.0, min_lr_ratio=0.05)
    assert s(0) == 0.0 and s(5) == 1.0 and s(19) == 1.0
    assert s(20) == pytest.approx(1.0)  # cosine starts at epoch 2
    assert s(30) == pytest.approx(0.05 + 0.95 * 0.5)
    assert s(40) == pytest.approx(0.05)
    assert WarmupCosine(10, 4, 0, cosine_start_epoch=4)(39) == 1.0


def test_ema_momentum_formula_and_param_groups():
    lin = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ExpMomentumEMA(lin, momentum=2e-4, gamma=2000)
    start = lin[0].weight.detach().clone()
    with torch.no_grad():
        lin[0].weight.add_(1.0)
    ema.update(lin)
    m = (1 - 2e-4) * math.exp(-1 / 2000) + 2e-4
    torch.testing.assert_close(ema.state["0.weight"], start + m)
    groups = param_groups(lin, 0.05)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0


def test_init_from_mmdet_layout_checkpoint_skips_mismatched_head(tmp_path):
    from _checkpoint_writers import save_mmengine_detector_checkpoint
    from cartoonseg.training.detector import init_detector_from

    torch.manual_seed(0)
    src = cartoonseg.build_detector(detector_config("tiny", num_classes=3))
    path = tmp_path / "coco_pretrained.ckpt"
    save_mmengine_detector_checkpoint(src, path)
    dst = cartoonseg.build_detector(detector_config("tiny", num_classes=1))
    report = init_detector_from(dst, path)
    assert sorted(report["skipped"]) == sorted(k for k in dst.state_dict() if k.startswith("bbox_head.rtm_cls."))
    assert not report["missing"]
    for k in report["loaded"]:
        assert torch.equal(dst.state_dict()[k], src.state_dict()[k])


def test_init_from_a_checkpoint_of_another_preset_is_refused_with_the_key_diff(tmp_path):
    """--init with another model size used to copy the few tensors whose shapes happened to match and silently
    train the rest from scratch; it is refused, naming both presets and the first differing tensors."""
    from cartoonseg.training.detector import init_detector_from

    path = cartoonseg.save_weights(cartoonseg.build_detector(detector_config("s")), tmp_path / "s.safetensors")
    torch.manual_seed(0)
    dst = cartoonseg.build_detector(detector_config("tiny"))
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=r"preset 's', not of the run's preset 'tiny': 36 tensors not in the model "
                                         r"\(backbone\.stage2\.1\.blocks\.1\..*tensors of another shape "
                                         r"\(backbone\.stem\.0\.conv\.weight \(16, 3, 3, 3\) vs \(12, 3, 3, 3\)"):
        init_detector_from(dst, path)
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())  # nothing copied


def test_predictions_and_evaluation_of_a_model(toy):
    from cartoonseg.evaluation import evaluate_all
    from cartoonseg.evaluation.predict import predict_coco

    coco = load_coco(find_annotation(toy))
    det = cartoonseg.build_detector(detector_config("tiny", det_size=64, score_thr=0.0))
    ref = cartoonseg.build_refiner("tiny")
    seg = cartoonseg.Segmenter(det, ref, det_size=64, score_thr=0.0, refine_size=64, max_instances=5)
    preds = predict_coco(seg, coco.raw, coco.image_root, stages="both")
    assert set(preds) == {"stage1", "refined"} and len(preds["stage1"]) == len(preds["refined"]) > 0
    for r in preds["refined"][:3]:
        assert set(r) == {"image_id", "category_id", "score", "bbox", "segmentation"}
        assert r["category_id"] == 0 and len(r["bbox"]) == 4
    out = evaluate_all(coco.raw, preds["refined"])
    assert all(0.0 <= out[f"{t}_AP"] <= 1.0 for t in ("bbox", "segm", "boundary"))
    # a ground truth without a categories list: predictions take the ids its annotations use, as the evaluator does
    bare = {k: v for k, v in coco.raw.items() if k != "categories"}
    bare["annotations"] = [dict(a, category_id=3) for a in bare["annotations"]]
    relabelled = predict_coco(seg, bare, coco.image_root)["final"]
    assert relabelled and {r["category_id"] for r in relabelled} == {3}


def test_amp_bf16_on_a_cpu_trains_in_bf16_where_it_has_bf16_kernels_and_is_refused_elsewhere(toy, tmp_path):
    """``--amp bf16`` on a CPU used to train in fp32 without a word. Now it autocasts to bf16 where the CPU has bf16
    kernels (checked at run time, so this holds on every CPU) and is refused with the CPU named elsewhere; fp16 on a
    CPU is always refused, and auto/none stay fp32 (the reference)."""
    from cartoonseg.device import capabilities
    from cartoonseg.training.engine import autocast_dtype

    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("none", cpu) is None
    with pytest.raises(ValueError, match="--amp fp16 is not supported for training on this CPU"):
        autocast_dtype("fp16", cpu)
    if "bf16" not in capabilities("cpu").supported:
        with pytest.raises(ValueError, match="--amp bf16 is not supported for training on this CPU"):
            train_detector(_det_cfg(toy, tmp_path / "run", epochs=1, max_iters=1, amp="bf16"))
        return
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    seen = []
    real = torch.nn.functional.conv2d

    def spy(x, *a, **k):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return real(x, *a, **k)

    import unittest.mock

    with unittest.mock.patch.object(torch.nn.functional, "conv2d", spy):
        summary = train_detector(_det_cfg(toy, tmp_path / "run", epochs=1, max_iters=1, amp="bf16"))
    assert torch.bfloat16 in seen  # the training step's convolutions (the export check after it runs in fp32)
    assert summary["global_step"] == 1


def test_augmentation_defaults_are_the_stock_rtmdet_ins_recipe():
    """The defaults are mmdet's ``rtmdet-ins_l_8xb32-300e_coco.py``: stage 1 ``RandomResize`` ratio (0.1, 2.0) of
    1280 = 2S, ``CachedMixUp`` ratio (1.0, 1.0); stage 2 (``train_pipeline_stage2``) ``RandomResize`` ratio
    (0.1, 2.0) of 640 = S (the stage-2 default was once (0.5, 2.0), not the -L config's value)."""
    a = DetAugConfig()
    assert a.img_size == 640 and a.resize_ratio == (0.1, 2.0) and a.mixup_ratio_range == (1.0, 1.0)
    assert a.no_mosaic_resize_ratio == (0.1, 2.0)



def test_the_no_mosaic_resize_ratio_reaches_the_pipeline_and_tiny_cpu_keeps_its_measured_one(toy, tmp_path,
                                                                                             monkeypatch):
    """The pipeline without mosaic takes the config's ratio (mmdet's (0.1, 2.0) by default), while the tiny-cpu
    recipe keeps the 0.5-2 its convergence figures were measured with (at 192 px, 0.1 would leave 19-px samples)."""
    import cartoonseg.training.detector as det
    from cartoonseg.training.detector import detector_recipe

    seen = []

    class Stop(Exception):
        pass

    def spy(coco, aug, seed=0):
        seen.append(aug)
        raise Stop

    monkeypatch.setattr(det, "DetectionTrainSet", spy)
    for cfg in (_det_cfg(toy, tmp_path / "a", mosaic=False, mixup=False),
                _det_cfg(toy, tmp_path / "b", mosaic=False, mixup=False, no_mosaic_resize_ratio=(0.5, 2.0))):
        with pytest.raises(Stop):
            train_detector(cfg)
    assert [a.no_mosaic_resize_ratio for a in seen] == [(0.1, 2.0), (0.5, 2.0)]
    tiny = detector_recipe("tiny-cpu", train_ann="x.json", out_dir=str(tmp_path / "c"))
    assert tiny.no_mosaic_resize_ratio == (0.5, 2.0) and not tiny.mosaic
    with pytest.raises(ValueError, match="no_mosaic_resize_ratio"):
        DetectorTrainConfig(train_ann="x.json", out_dir="o", no_mosaic_resize_ratio=(0.0, 2.0))


@pytest.mark.parametrize("damage", ["safetensors", "json", "json-not-ours"])
def test_a_damaged_training_checkpoint_is_one_checkpoint_error_naming_the_file(tmp_path, damage):
    """A resume from a damaged checkpoint (a copy cut short, a disk error) ended in a safetensors / JSON traceback
    without the file's name; now it is a CheckpointError (one ``error:`` line of the trainers) naming the file and
    how to start over."""
    from cartoonseg.models.weights import CheckpointError
    from cartoonseg.training.state import save_training_state

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    prefix = tmp_path / "detector_last"
    save_training_state(prefix, model_state=model.state_dict(), optimizer=opt,
                        progress={"epoch": 0, "iter": 1, "global_step": 1}, config={})
    target = prefix.with_suffix(".safetensors" if damage == "safetensors" else ".json")
    target.write_bytes(b'{"format": "other"}' if damage == "json-not-ours" else target.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=re.escape(str(target))) as info:
        load_training_state(prefix)
    assert "--no-resume" in str(info.value)


CUDA_LESS = """
import sys, torch
torch.cuda.is_available = lambda: False
from cartoonseg.training.detector import DetectorTrainConfig, train_detector
from train._cli import run_training
cfg = DetectorTrainConfig(train_ann=sys.argv[1], out_dir=sys.argv[2], preset="tiny", device=sys.argv[3])
sys.exit(run_training(lambda: train_detector(cfg)))
"""


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_training_on_cuda_without_cuda_is_one_error_line_naming_the_device(tmp_path, device):
    """The command lines check ``--device`` first, but a trainer reached another way (a config's ``device``, a
    bench or notebook script under the trainers' error policy) ended in a RuntimeError traceback from ``setup``;
    now it is the same one ``error:`` line as ``--device`` (ValueError naming it and the cpu to use)."""
    import subprocess
    import sys

    from cartoonseg.training.toy import make_toy_coco

    ann = make_toy_coco(tmp_path / "data", num_images=2, size=64, seed=0)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", CUDA_LESS, str(ann), str(tmp_path / "out"), device], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: --device {device}: CUDA is not available") and "--device cpu" in lines[0]
    assert not (tmp_path / "out").exists()  # stopped before anything was written


def test_more_processes_than_gpus_is_one_error_naming_the_limit(monkeypatch):
    """``cuda`` under torchrun is ``cuda:LOCAL_RANK``: a second process on a one-GPU machine failed in
    ``torch.cuda.set_device`` with a RuntimeError traceback; now a ValueError says how many GPUs there are."""
    from cartoonseg.training.distributed import setup

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match=r"--device cuda: process LOCAL_RANK=1 would use GPU 1 but this machine has 1"):
        setup("cuda")
