"""Stage-2 (refiner) training data with coarse-mask simulation (Paper §4.2-4.3; CS
``animeinsseg/data/maskrefine_dataset.py`` as described in pipeline_spec §3.2).

Each item picks one image and one random ground-truth instance of it. The coarse mask (4th input channel) is

* with probability ``ins_rect_prob`` (0.25) the filled ground-truth box, so the refiner accepts box prompts;
* otherwise a random entry of the annotation's ``pred_segmentations`` (stage-1 predictions attached by
  ``train.dump_predictions``), or the ground truth itself when there are none;
* then, with probability ``aug_ins_prob`` (0.5), dilated or eroded (50/50) with an elliptical kernel of size
  3, 7, 11 or 15.

Image and masks are padded bottom/right to a square (image pad value a random integer in [0, 255], masks 0)
and resized to ``size`` (720): INTER_AREA when shrinking, INTER_LINEAR when enlarging. The input is
``[B, G, R, coarse] / 255`` (BGR, no mean/std), the target the resized ground truth in [0, 1]. An optional
horizontal flip applies to image and both masks. The generator of item ``i`` is seeded with
``(seed, epoch, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .. import rle as rle_utils
from .coco import CocoSet, read_image_bgr

__all__ = ["RefineAugConfig", "RefineTrainSet", "pad_square_resize", "simulate_coarse_mask"]

KERNEL_SIZES = (3, 7, 11, 15)


@dataclass(frozen=True)
class RefineAugConfig:
    """Refiner data settings.

    Attributes:
        size: square training canvas (720 in the paper).
        ins_rect_prob: probability of a box-rectangle coarse mask.
        aug_ins_prob: probability of dilating/eroding the coarse mask.
        flip_prob: horizontal flip probability.
        random_pad: random image pad value (True, as the original) or 0.
    """

    size: int = 720
    ins_rect_prob: float = 0.25
    aug_ins_prob: float = 0.5
    flip_prob: float = 0.5
    random_pad: bool = True

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"size must be >= 32, got {self.size}")
        for name in ("ins_rect_prob", "aug_ins_prob", "flip_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")


def simulate_coarse_mask(
    gt: np.ndarray,
    box: tuple[float, float, float, float],
    preds: list[np.ndarray],
    rng: np.random.Generator,
    ins_rect_prob: float = 0.25,
    aug_ins_prob: float = 0.5,
) -> np.ndarray:
    """The coarse uint8 mask ``[H,W]`` for one instance (see the module docstring).

    Args:
        gt: ground-truth mask ``[H,W]`` (0/1).
        box: its xyxy box.
        preds: stage-1 predicted masks for this instance (may be empty).
        rng: the generator.
    """
    h, w = gt.shape
    if rng.random() < ins_rect_prob:
        coarse = np.zeros((h, w), np.uint8)
        x1, y1, x2, y2 = box
        coarse[max(0, int(y1)) : min(h, int(np.ceil(y2))), max(0, int(x1)) : min(w, int(np.ceil(x2)))] = 1
    elif preds:
        coarse = preds[int(rng.integers(0, len(preds)))].astype(np.uint8).copy()
    else:
        coarse = gt.astype(np.uint8).copy()
    if rng.random() < aug_ins_prob:
        k = KERNEL_SIZES[int(rng.integers(0, len(KERNEL_SIZES)))]
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        coarse = cv2.dilate(coarse, kernel) if rng.random() < 0.5 else cv2.erode(coarse, kernel)
    return coarse


def pad_square_resize(arr: np.ndarray, size: int, pad_value: float = 0) -> np.ndarray:
    """Pad bottom/right to a square, then resize to ``size`` (INTER_AREA shrinking, INTER_LINEAR enlarging)."""
    h, w = arr.shape[:2]
    side = max(h, w)
    shape = (side, side) + arr.shape[2:]
    out = np.full(shape, pad_value, dtype=arr.dtype)
    out[:h, :w] = arr
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)


class RefineTrainSet(Dataset):
    """Refiner samples ``{"x": float [4,S,S], "mask": float [1,S,S]}`` from a COCO set (images with at least one
    instance that has a real mask; box-only instances are skipped)."""

    def __init__(self, coco: CocoSet, aug: RefineAugConfig | None = None, seed: int = 0) -> None:
        self.coco = coco
        self.aug = aug or RefineAugConfig()
        self.seed = int(seed)
        self.epoch = 0
        self.items: list[tuple[int, list[int]]] = []
        for i, im in enumerate(coco.images):
            usable = [
                j
                for j, a in enumerate(im.annotations)
                if rle_utils.segmentation_to_mask(a.segmentation, im.height, im.width) is not None
            ]
            if usable:
                self.items.append((i, usable))
        if not self.items:
            raise ValueError("no image of the set has an instance with a segmentation mask")

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """numpy ``img`` uint8 BGR ``[S,S,3]``, ``coarse`` float ``[S,S]``, ``mask`` float ``[S,S]``."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        a = self.aug
        img_idx, usable = self.items[index]
        image = self.coco.images[img_idx]
        ann = image.annotations[usable[int(rng.integers(0, len(usable)))]]
        img = read_image_bgr(image.path)
        gt = rle_utils.segmentation_to_mask(ann.segmentation, image.height, image.width)
        preds = []
        for p in ann.pred_segmentations:
            m = rle_utils.segmentation_to_mask(p, image.height, image.width)
            if m is not None:
                preds.append(m)
        coarse = simulate_coarse_mask(gt, ann.box, preds, rng, a.ins_rect_prob, a.aug_ins_prob)
        if rng.random() < a.flip_prob:
            img, gt, coarse = img[:, ::-1], gt[:, ::-1], coarse[:, ::-1]
        pad = int(rng.integers(0, 256)) if a.random_pad else 0
        img = pad_square_resize(np.ascontiguousarray(img), a.size, pad)
        gt = pad_square_resize(np.ascontiguousarray(gt).astype(np.float32), a.size, 0)
        coarse = pad_square_resize(np.ascontiguousarray(coarse).astype(np.float32), a.size, 0)
        return {"img": img, "coarse": coarse, "mask": gt}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        s = self.sample(index)
        x = np.concatenate([s["img"].astype(np.float32) / 255.0, s["coarse"][..., None]], axis=2)
        return {
            "x": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
            "mask": torch.from_numpy(s["mask"][None].copy()),
        }


def collate_refine(batch: list[dict[str, Tensor]]) -> dict[str, Any]:
    return {"x": torch.stack([b["x"] for b in batch]), "mask": torch.stack([b["mask"] for b in batch])}


__all__.append("collate_refine")
