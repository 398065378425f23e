"""Generate the training-loss golden data in ``tests/data/`` from the original implementations.

Not run by CI and not a project dependency: it needs a scratch environment with the real OpenMMLab stack and the
two original CartoonSegmentation files. The environment that produced the committed files (2 CPU cores,
Python 3.11.7):

* torch 2.13.0+cpu, numpy 1.26.4, opencv-python-headless 4.10.0.84, setuptools 69.5.1 (mmcv's setup.py needs
  ``pkg_resources``), mmengine 0.10.5;
* mmcv 2.1.0 built from the PyPI sdist: ``MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 pip install
  --no-build-isolation --no-deps mmcv==2.1.0``;
* mmdet 3.3.0 (``pip install --no-deps mmdet==3.3.0``, then pycocotools, shapely, terminaltables, ...);
* CartoonSegmentation commit a418215: ``animeinsseg/models/rtmdet_inshead_custom.py`` (registers
  ``RTMDetInsSepBNHeadCustom``, whose ``loss_mask_by_feat`` drops ``ignore_mask`` instances) and
  ``animeinsseg/models/animeseg_refine/isnet.py`` (the refiner losses), run unmodified from ``--cs-src``. Its
  ``isnet.py`` imports ``torchvision`` without using it; a stub module stands in when torchvision is absent.

Run::

    python tools/make_training_golden.py --cs-src <CartoonSegmentation checkout> \
        --reference ../shared/reference --out tests/data

Outputs (all small):

* ``training_golden_detector.npz`` + ``.json``: RTMDet-Ins stage-1 loss data. One batch of four 160x224 images
  (several overlapping instances; box-only ``ignore_mask`` instances with non-integer boxes; an image without
  ground truth; a tiny box and boxes on the prior grid and the image border) and, for it:

  - ``crafted``: 3-class head outputs made to lie near the ground truth (so the dynamic-k matching picks up to
    13 priors per object and priors are contested), rounded to float16 and fed to
    ``RTMDetInsSepBNHeadCustom.loss_by_feat``;
  - ``crafted_nogt`` / ``crafted_allignore``: the same outputs with every ground truth removed / every mask
    ignored;
  - ``forward``: the head outputs of the tiny golden network (``rtmdet_ins_tiny_golden_weights.safetensors``,
    1 class) in training mode on the images, rounded to float16 (kernels kept only where a prior lies inside a
    box: no other kernel reaches the loss), fed to ``loss_by_feat``; plus ``e2e``: ``RTMDet.loss`` on the
    normalised images from the float32 forward (no rounding).

  Recorded per case: every loss term per level, the averaging factors, each image's assignment
  (``assigned_gt_inds``, ``max_overlaps``, assigned labels, the positive priors and their targets) and the
  gradients of the total loss with respect to every head output.
* ``training_golden_refiner.npz`` + ``.json``: IS-Net refiner losses from the original ``isnet.py`` functions
  (``structure_loss`` per side output, ``muti_loss_fusion`` with ``loss0_weight`` 5 and 1 (GT encoder),
  ``muti_loss_fusion_kl`` in MSE mode) on soft and binary masks, with gradients.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import types
from pathlib import Path

import numpy as np

H, W = 160, 224
STRIDES = (8, 16, 32)


# ----------------------------------------------------------------------------------------------- scenes
def _scenes(seed: int = 21):
    """Four images (uint8 BGR) with ground truth: boxes xyxy float32, labels, masks uint8, ignore flags."""
    import cv2

    rng = np.random.default_rng(seed)
    images, gts = [], []

    def canvas():
        img = np.empty((H, W, 3), np.uint8)
        img[:] = rng.integers(60, 230, 3)
        yy, xx = np.mgrid[0:H, 0:W]
        img = np.clip(img.astype(np.int32) + ((xx + 2 * yy) % 23)[..., None] - 11, 0, 255).astype(np.uint8)
        return img

    def paint(img, masks, shape_fn):
        m = np.zeros((H, W), np.uint8)
        shape_fn(m)
        for prev in masks:  # later instances occlude earlier ones
            prev[m > 0] = 0
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        img[m > 0] = colour
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, (20, 20, 20), 1)
        masks.append(m)

    def tight(m):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]

    # image 0: five overlapping instances of three classes
    img, masks = canvas(), []
    paint(img, masks, lambda m: cv2.ellipse(m, (60, 70), (40, 55), 15, 0, 360, 1, -1))
    paint(img, masks, lambda m: cv2.ellipse(m, (95, 85), (35, 30), -20, 0, 360, 1, -1))
    paint(img, masks, lambda m: cv2.fillPoly(m, [np.array([[130, 20], [200, 40], [185, 120], [140, 100]])], 1))
    paint(img, masks, lambda m: cv2.circle(m, (170, 120), 28, 1, -1))
    paint(img, masks, lambda m: cv2.rectangle(m, (10, 120), (70, 150), 1, -1))
    images.append(img)
    gts.append(
        dict(
            boxes=[tight(m) for m in masks],
            labels=[0, 1, 2, 1, 0],
            masks=masks,
            ignore=[False] * 5,
        )
    )

    # image 1: one real mask, two box-only instances (CartoonSegmentation: filled int() box, ignore_mask=True)
    img, masks = canvas(), []
    paint(img, masks, lambda m: cv2.ellipse(m, (150, 80), (50, 60), 0, 0, 360, 1, -1))
    boxes = [tight(masks[0])]
    for box in ([20.6, 30.3, 90.8, 100.1], [60.2, 90.7, 130.9, 158.4]):
        m = np.zeros((H, W), np.uint8)
        b = [int(c) for c in box]
        m[b[1] : b[3], b[0] : b[2]] = 1
        masks.append(m)
        boxes.append(box)
        cv2.rectangle(img, (b[0], b[1]), (b[2] - 1, b[3] - 1), (30, 30, 30), 1)
    images.append(img)
    gts.append(dict(boxes=boxes, labels=[2, 0, 1], masks=masks, ignore=[False, True, True]))

    # image 2: nothing
    images.append(canvas())
    gts.append(dict(boxes=[], labels=[], masks=[], ignore=[]))

    # image 3: a tiny object between prior points, a box exactly on the stride-8 grid, one at the image border
    img, masks = canvas(), []
    paint(img, masks, lambda m: cv2.rectangle(m, (33, 41), (36, 45), 1, -1))  # 4x5 px, no prior inside
    paint(img, masks, lambda m: cv2.rectangle(m, (48, 64), (111, 127), 1, -1))  # [48, 64, 112, 128]
    paint(img, masks, lambda m: cv2.ellipse(m, (200, 60), (40, 45), 0, 0, 360, 1, -1))  # clipped at x = 224
    images.append(img)
    gts.append(dict(boxes=[tight(m) for m in masks], labels=[1, 0, 2], masks=masks, ignore=[False] * 3))

    out = []
    for g in gts:
        n = len(g["boxes"])
        out.append(
            dict(
                boxes=np.asarray(g["boxes"], np.float32).reshape(n, 4),
                labels=np.asarray(g["labels"], np.int64).reshape(n),
                masks=(np.stack(g["masks"]) if n else np.zeros((0, H, W), np.uint8)).astype(np.uint8),
                ignore=np.asarray(g["ignore"], bool).reshape(n),
            )
        )
    return images, out


def _levels():
    return [(H // s, W // s) for s in STRIDES]


def _priors_xy():
    pts = []
    for (h, w), s in zip(_levels(), STRIDES):
        ys, xs = np.meshgrid(np.arange(h) * s, np.arange(w) * s, indexing="ij")
        pts.append(np.stack([xs.ravel(), ys.ravel(), np.full(h * w, s)], 1))
    return np.concatenate(pts).astype(np.float32)


def _inside_any(gt):
    p = _priors_xy()
    b = gt["boxes"]
    if len(b) == 0:
        return np.zeros(len(p), bool), np.zeros((len(p), 0), bool)
    inside = (
        (p[:, None, 0] > b[None, :, 0])
        & (p[:, None, 0] < b[None, :, 2])
        & (p[:, None, 1] > b[None, :, 1])
        & (p[:, None, 1] < b[None, :, 3])
    )
    return inside.any(1), inside


def _to_levels(flat: np.ndarray, batch: int) -> list[np.ndarray]:
    """[B, P, C] -> per level [B, C, h, w]."""
    out, start = [], 0
    for h, w in _levels():
        n = h * w
        out.append(np.ascontiguousarray(flat[:, start : start + n].reshape(batch, h, w, -1).transpose(0, 3, 1, 2)))
        start += n
    return out


def _crafted_outputs(gts, num_classes: int, seed: int = 7):
    """Head outputs whose boxes lie near the ground truth (IoU 0.3-0.95) on the priors inside a box."""
    rng = np.random.default_rng(seed)
    p = _priors_xy()
    num_p, b = len(p), len(gts)
    cls = rng.normal(-3.0, 1.5, (b, num_p, num_classes))
    dist = rng.uniform(0.0, 3.0, (b, num_p, 4)) * p[None, :, 2:3]
    ker = np.zeros((b, num_p, 169))
    for i, gt in enumerate(gts):
        valid, inside = _inside_any(gt)
        for j in np.flatnonzero(valid):
            g = rng.choice(np.flatnonzero(inside[j]))
            x1, y1, x2, y2 = gt["boxes"][g]
            bw, bh = x2 - x1, y2 - y1
            jit = rng.normal(0.0, 0.12, 4) * np.array([bw, bh, bw, bh])
            tx1, ty1, tx2, ty2 = x1 + jit[0], y1 + jit[1], x2 + jit[2], y2 + jit[3]
            px, py = p[j, 0], p[j, 1]
            dist[i, j] = np.maximum([px - tx1, py - ty1, tx2 - px, ty2 - py], 0.0)
            cls[i, j, gt["labels"][g]] += rng.uniform(0.0, 4.0)
            ker[i, j] = rng.normal(0.0, 0.4, 169)
    mask_feat = rng.normal(0.0, 1.0, (b, 8, H // 8, W // 8))
    f16 = lambda a: a.astype(np.float16)
    return {
        "cls": [f16(a) for a in _to_levels(cls, b)],
        "bbox": [f16(a) for a in _to_levels(dist, b)],
        "kernel": [f16(a) for a in _to_levels(ker, b)],
        "mask_feat": f16(mask_feat),
    }


# ----------------------------------------------------------------------------------------------- mmdet
def _mm_instances(gt, num_classes_labels: bool = True):
    import torch
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    inst = InstanceData()
    # plain tensors, as DetDataPreprocessor(boxtype2tensor=True) hands them to the head in training
    inst.bboxes = torch.from_numpy(gt["boxes"]).float()
    inst.labels = torch.from_numpy(gt["labels"] if num_classes_labels else np.zeros_like(gt["labels"])).long()
    inst.masks = BitmapMasks(gt["masks"], H, W)
    inst.ignore_mask = torch.from_numpy(gt["ignore"]).bool()
    return inst


def _build_head(num_classes: int, model_cfg: dict):
    import copy

    from mmdet.registry import MODELS

    cfg = copy.deepcopy(model_cfg["bbox_head"])
    cfg["num_classes"] = num_classes
    cfg["norm_cfg"] = dict(type="BN", requires_grad=True)
    return MODELS.build(cfg)


def _run_loss(head, outputs: dict, gts, num_classes_labels: bool = True) -> dict:
    """``loss_by_feat`` on float16-rounded outputs (float32 leaves), with pass-through capture of the targets."""
    import torch

    leaves = {
        "cls": [torch.from_numpy(a).float().requires_grad_() for a in outputs["cls"]],
        "bbox": [torch.from_numpy(a).float().requires_grad_() for a in outputs["bbox"]],
        "kernel": [torch.from_numpy(a).float().requires_grad_() for a in outputs["kernel"]],
        "mask_feat": torch.from_numpy(outputs["mask_feat"]).float().requires_grad_(),
    }
    captured: dict = {"assign": [], "single": []}
    orig_assign = head.assigner.assign
    orig_single = head.loss_by_feat_single
    orig_targets = head.get_targets

    def assign(*a, **k):
        res = orig_assign(*a, **k)
        captured["assign"].append(res)
        return res

    def single(*a, **k):
        res = orig_single(*a, **k)
        captured["single"].append([float(r.detach()) if torch.is_tensor(r) else float(r) for r in res])
        return res

    def targets(*a, **k):
        res = orig_targets(*a, **k)
        captured["targets"] = res
        return res

    head.assigner.assign = assign
    head.loss_by_feat_single = single
    head.get_targets = targets
    try:
        insts = [_mm_instances(g, num_classes_labels) for g in gts]
        metas = [dict(img_shape=(H, W), pad_shape=(H, W), batch_input_shape=(H, W)) for _ in gts]
        losses = head.loss_by_feat(
            leaves["cls"], leaves["bbox"], leaves["kernel"], leaves["mask_feat"], insts, metas, None
        )
    finally:
        head.assigner.assign = orig_assign
        head.loss_by_feat_single = orig_single
        head.get_targets = orig_targets
    total = sum(losses["loss_cls"]) + sum(losses["loss_bbox"]) + losses["loss_mask"]
    total.backward()
    rec: dict = {
        "loss_cls_levels": [float(x.detach()) for x in losses["loss_cls"]],
        "loss_bbox_levels": [float(x.detach()) for x in losses["loss_bbox"]],
        "loss_cls": float(sum(losses["loss_cls"])),
        "loss_bbox": float(sum(losses["loss_bbox"])),
        "loss_mask": float(losses["loss_mask"]),
        "loss": float(total),
        "cls_avg_factor": max(1.0, sum(s[2] for s in captured["single"])),
        "bbox_avg_factor": max(1.0, sum(s[3] for s in captured["single"])),
    }
    arrays: dict = {}
    _, labels_l, weights_l, bbox_t_l, metrics_l, sampling = captured["targets"]
    labels = torch.cat(labels_l, 1)
    weights = torch.cat(weights_l, 1)
    bbox_t = torch.cat(bbox_t_l, 1)
    metrics = torch.cat(metrics_l, 1)
    num_mask = 0
    for i, (res, samp) in enumerate(zip(captured["assign"], sampling)):
        arrays[f"img{i}.assigned_gt_inds"] = res.gt_inds.numpy().astype(np.int64)
        pos = samp.pos_inds.numpy().astype(np.int64)
        arrays[f"img{i}.pos_inds"] = pos
        arrays[f"img{i}.pos_assigned_gt_inds"] = samp.pos_assigned_gt_inds.numpy().astype(np.int64)
        arrays[f"img{i}.labels"] = labels[i].numpy().astype(np.int64)
        arrays[f"img{i}.label_weights"] = weights[i].numpy().astype(np.float32)
        arrays[f"img{i}.assign_metrics"] = metrics[i].numpy().astype(np.float32)
        arrays[f"img{i}.pos_bbox_targets"] = bbox_t[i][samp.pos_inds].numpy().astype(np.float32)
        gt_ignore = gts[i]["ignore"]
        num_mask += int((~gt_ignore[samp.pos_assigned_gt_inds.numpy()]).sum()) if len(gt_ignore) else 0
    rec["mask_num_pos"] = num_mask
    rec["num_pos"] = int(sum(len(s.pos_inds) for s in sampling))
    for name in ("cls", "bbox", "kernel"):
        for level, t in enumerate(leaves[name]):
            grad = t.grad if t.grad is not None else torch.zeros_like(t)  # None: not in the graph
            arrays[f"grad.{name}.{level}"] = grad.numpy().astype(np.float32)
    arrays["grad.mask_feat"] = leaves["mask_feat"].grad.numpy().astype(np.float32)
    return rec, arrays


def detector_golden(reference: Path, out: Path) -> None:
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.model import revert_sync_batchnorm
    from safetensors.torch import load_file

    register_all_modules()
    import animeinsseg.models.rtmdet_inshead_custom  # noqa: F401  (registers RTMDetInsSepBNHeadCustom)

    meta = json.loads((reference / "rtmdet_ins_tiny_golden.json").read_text())
    model_cfg = meta["variant"]["model_cfg"]
    images, gts = _scenes()
    npz: dict = {}
    record: dict = {"canvas": [H, W], "strides": list(STRIDES), "cases": {}}
    for i, (img, gt) in enumerate(zip(images, gts)):
        npz[f"img{i}.image_bgr"] = img
        npz[f"img{i}.boxes"] = gt["boxes"]
        npz[f"img{i}.labels"] = gt["labels"]
        npz[f"img{i}.masks"] = gt["masks"]
        npz[f"img{i}.ignore_mask"] = gt["ignore"]

    def store(case, outputs, rec, arrays):
        record["cases"][case] = rec
        for k, v in arrays.items():
            npz[f"{case}.{k}"] = v
        if outputs is not None:
            for name in ("cls", "bbox", "kernel"):
                for level, a in enumerate(outputs[name]):
                    npz[f"{case}.out.{name}.{level}"] = a
            npz[f"{case}.out.mask_feat"] = outputs["mask_feat"]

    # crafted 3-class outputs near the ground truth
    head3 = _build_head(3, model_cfg)
    crafted = _crafted_outputs(gts, 3)
    rec, arr = _run_loss(head3, crafted, gts)
    rec["num_classes"] = 3
    store("crafted", crafted, rec, arr)
    empty = [dict(boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64),
                  masks=np.zeros((0, H, W), np.uint8), ignore=np.zeros(0, bool)) for _ in gts]
    rec, arr = _run_loss(head3, crafted, empty)
    rec["num_classes"] = 3
    store("crafted_nogt", None, rec, arr)
    allign = [dict(g, ignore=np.ones_like(g["ignore"])) for g in gts]
    rec, arr = _run_loss(head3, crafted, allign)
    rec["num_classes"] = 3
    store("crafted_allignore", None, rec, arr)

    # the tiny golden network in training mode, one class
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    weights = load_file(str(reference / "rtmdet_ins_tiny_golden_weights.safetensors"))
    model.load_state_dict(weights, strict=True)
    model.train()
    mean = torch.tensor(model_cfg["data_preprocessor"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model_cfg["data_preprocessor"]["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() - mean) / std
    with torch.no_grad():
        cls_s, bbox_p, ker_p, mfeat = model.bbox_head(model.neck(model.backbone(x)))
    valid = np.stack([_inside_any(g)[0] for g in gts])  # [B, P]
    ker_flat = np.concatenate([k.permute(0, 2, 3, 1).reshape(len(gts), -1, 169).numpy() for k in ker_p], 1)
    ker_flat = ker_flat * valid[..., None]
    fwd = {
        "cls": [t.numpy().astype(np.float16) for t in cls_s],
        "bbox": [t.numpy().astype(np.float16) for t in bbox_p],
        "kernel": [a.astype(np.float16) for a in _to_levels(ker_flat, len(gts))],
        "mask_feat": mfeat.numpy().astype(np.float16),
    }
    rec, arr = _run_loss(model.bbox_head, fwd, gts, num_classes_labels=False)
    rec["num_classes"] = 1
    store("forward", fwd, rec, arr)

    # end to end: RTMDet.loss on the normalised images (float32 forward, no rounding), same weights, train mode
    from mmdet.structures import DetDataSample

    model.load_state_dict(weights, strict=True)  # fresh BN running stats (they do not enter the outputs)
    samples = []
    for g in gts:
        s = DetDataSample()
        s.gt_instances = _mm_instances(g, num_classes_labels=False)
        s.set_metainfo(dict(img_shape=(H, W), pad_shape=(H, W), batch_input_shape=(H, W)))
        samples.append(s)
    losses = model.loss(x, samples)
    record["e2e"] = {
        "loss_cls": float(sum(losses["loss_cls"])),
        "loss_bbox": float(sum(losses["loss_bbox"])),
        "loss_mask": float(losses["loss_mask"]),
        "note": "RTMDet.loss in train mode (batch-statistics BN) on img*.image_bgr normalised with the BGR "
        "mean/std, tiny golden weights, 1 class",
    }
    record["versions"] = _versions()
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "training_golden_detector.npz", **npz)
    (out / "training_golden_detector.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if "levels" not in kk} for k, v in record["cases"].items()},
                     indent=1))
    print("e2e", record["e2e"])


# ----------------------------------------------------------------------------------------------- IS-Net
def refiner_golden(cs_src: Path, out: Path) -> None:
    import cv2
    import torch

    if importlib.util.find_spec("torchvision") is None:  # isnet.py imports it without using it
        sys.modules["torchvision"] = types.SimpleNamespace(models=None)
    spec = importlib.util.spec_from_file_location(
        "cs_isnet", cs_src / "animeinsseg" / "models" / "animeseg_refine" / "isnet.py"
    )
    isnet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(isnet)

    rng = np.random.default_rng(5)
    b, h, w = 2, 48, 64
    masks = np.zeros((b, 1, h, w), np.float32)
    cv2.ellipse(masks[0, 0], (30, 22), (20, 14), 10, 0, 360, 1.0, -1)
    cv2.rectangle(masks[1, 0], (6, 8), (40, 42), 1.0, -1)
    cv2.circle(masks[1, 0], (44, 14), 10, 0.0, -1)
    soft = cv2.GaussianBlur(masks[0, 0], (7, 7), 2.0)  # resized training masks are soft at the edges
    masks_soft = masks.copy()
    masks_soft[0, 0] = soft
    # six side outputs, all at the input size (ISNetDIS upsamples them), roughly correlated with the mask
    sides = [((masks * 2 - 1) * rng.uniform(1, 4) + rng.normal(0, 1.5, masks.shape)).astype(np.float16)
             for _ in range(6)]
    # the refiner's levels (strides 2..64); channels reduced from (64, 64, 128, 256, 512, 512) to keep the file
    # small (the loss is a mean over all elements, so the channel count does not change what is tested)
    chans, strides = (16, 16, 32, 32, 64, 64), (2, 4, 8, 16, 32, 64)
    feats = [rng.normal(0, 1, (b, c, -(-h // s), -(-w // s))).astype(np.float16) for c, s in zip(chans, strides)]
    gt_feats = [(f.astype(np.float32) * 0.7 + rng.normal(0, 0.5, f.shape)).astype(np.float16) for f in feats]

    npz: dict = {"mask_binary": masks, "mask_soft": masks_soft}
    for i in range(6):
        npz[f"side{i + 1}"] = sides[i]
        npz[f"feat{i + 1}"] = feats[i]
        npz[f"gt_feat{i + 1}"] = gt_feats[i]
    rec: dict = {}
    for name, m in (("binary", masks), ("soft", masks_soft)):
        target = torch.from_numpy(m)
        ds = [torch.from_numpy(s).float().requires_grad_() for s in sides]
        dfs = [torch.from_numpy(f).float().requires_grad_() for f in feats]
        fs = [torch.from_numpy(f).float() for f in gt_feats]
        per_level = [float(isnet.structure_loss(d, target)) for d in ds]
        l0_gt, l_gt = isnet.ISNetGTEncoder.compute_loss((ds, target))
        l0_plain, l_plain = isnet.ISNetDIS.compute_loss((ds, dfs, target))
        l0_kl, l_kl = isnet.ISNetDIS.compute_loss((ds, dfs, target, fs))
        l_kl.backward()
        rec[name] = {
            "structure_loss_levels": per_level,
            "gt_encoder_loss0": float(l0_gt),
            "gt_encoder_loss": float(l_gt),
            "refiner_no_is_loss0": float(l0_plain),
            "refiner_no_is_loss": float(l_plain),
            "refiner_loss0": float(l0_kl),
            "refiner_loss": float(l_kl),
        }
        npz[f"{name}.grad.d1"] = ds[0].grad.numpy()
        npz[f"{name}.grad.d6"] = ds[5].grad.numpy()
        npz[f"{name}.grad.feat1"] = dfs[0].grad.numpy()
        npz[f"{name}.grad.feat6"] = dfs[5].grad.numpy()
    rec["note"] = ("sides/feats are float16 values fed as float32; loss0 = the (weighted) d1 term as returned by "
                   "muti_loss_fusion(_kl); refiner_* use ISNetDIS.compute_loss (loss0_weight 5), gt_encoder_* "
                   "ISNetGTEncoder.compute_loss (weight 1); the KL variant adds sum_i MSE_mean(feat_i, gt_feat_i)")
    rec["versions"] = _versions()
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "training_golden_refiner.npz", **npz)
    (out / "training_golden_refiner.json").write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec, indent=1))


def _versions() -> dict:
    import torch

    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
         "cartoonsegmentation_commit": "a418215", "threads": torch.get_num_threads()}
    for mod in ("mmcv", "mmdet", "mmengine", "cv2"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            pass
    try:
        import mmcv._ext as ext

        # a pure-Python stand-in that raises on every call proves no compiled op is on the loss path
        v["mmcv_ext"] = "stub: every compiled op raises" if str(ext.__file__).endswith(".py") else "compiled"
    except ImportError:
        pass
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cs-src", required=True, type=Path, help="CartoonSegmentation checkout (commit a418215)")
    ap.add_argument("--reference", type=Path, default=Path("../shared/reference"), help="golden reference folder")
    ap.add_argument("--out", type=Path, default=Path("tests/data"), help="output folder")
    ap.add_argument("--only", choices=["detector", "refiner"], default=None, help="generate one part only")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    sys.path.insert(0, str(args.cs_src))
    if args.only in (None, "refiner"):
        refiner_golden(args.cs_src, args.out)
    if args.only in (None, "detector"):
        detector_golden(args.reference, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
