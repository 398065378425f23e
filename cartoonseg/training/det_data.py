"""Stage-1 training data: the RTMDet-Ins augmentation recipe with CartoonSegmentation's ignore-mask rules.

The upstream RTMDet-Ins training pipeline (mmdet ``rtmdet-ins_l_8xb32-300e_coco.py``; pipeline_spec §3.1),
written here in numpy/OpenCV, sample by sample:

1. **Mosaic** of 4 images on a ``2S x 2S`` canvas filled with 114, centre drawn from ``[0.5S, 1.5S]``, each
   image resized to fit ``S x S`` and placed top-left / top-right / bottom-left / bottom-right of the centre.
   CartoonSegmentation's rules: at most 3 manga tiles per mosaic, and a landscape manga page (double spread) is
   replaced by its left or right half with probability 0.75;
2. **RandomResize** to ``2S * r`` (keep ratio), ``r ~ U(0.1, 2.0)``;
3. **RandomCrop** ``S x S`` (boxes recomputed from the cropped masks; instances that vanish are dropped);
4. **YOLOX HSV** jitter (hue 5, saturation 30, value 30, each channel enabled with probability 1/2);
5. horizontal **flip** with probability 0.5; **pad** bottom/right to ``S x S`` with 114;
6. **MixUp** (mmdet ``CachedMixUp``, probability 1 in the stock recipe) with a second sample made by steps 1-5:
   the partner is fitted (keep ratio) into an ``S x S`` canvas of 114 at the top left, the canvas scaled by
   ``j ~ U(mixup_ratio_range)`` (the RTMDet-Ins recipe sets ``(1.0, 1.0)``: no jitter), flipped with
   probability 0.5, pasted into a zero canvas of at least ``S x S`` and cropped to ``S x S`` at a random offset
   (``[0, extra)`` as mmdet draws it); blended 0.5/0.5, annotations concatenated, partner instances left with no
   pixel dropped. As mmdet's ``get_indexes``, up to ``mixup_max_iters`` (15) partners are drawn until one has an
   instance; when none has, nothing is mixed in (mmdet's "empty bbox" rule);
7. instances whose box is narrower or shorter than 1 px are removed.

The last ``no_aug_epochs`` epochs switch to the stock "stage 2" pipeline (``train_pipeline_stage2`` of the same
config): keep-ratio resize to fit ``S * r`` with ``r ~ U(0.1, 2.0)``, random crop, HSV, flip, pad (no
mosaic/mixup).

Randomness comes from a generator seeded with ``(seed, epoch, index)``, so a sample is the same whichever
worker, process or resumed run draws it. (mmdet keeps a cache of the last 40 images for mosaic partners;
here partners are drawn uniformly from the whole set, the same distribution without the cache.)

Samples are dicts: ``img`` uint8 ``[S,S,3]`` **BGR**, ``boxes`` float32 ``[N,4]`` xyxy, ``labels`` int64
``[N]``, ``masks`` uint8 ``[N,S,S]``, ``ignore_mask`` bool ``[N]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .coco import CocoImage, CocoSet, instance_masks, read_image_bgr

__all__ = [
    "DetAugConfig",
    "DetectionTrainSet",
    "boxes_from_masks",
    "collate_detection",
    "filter_small",
    "hflip",
    "hsv_jitter",
    "mixup",
    "mosaic",
    "pad_to",
    "random_crop",
    "random_resize",
]

PAD_VALUE = 114


@dataclass(frozen=True)
class DetAugConfig:
    """Augmentation settings (defaults = the stock RTMDet-Ins recipe at ``img_size`` 640).

    Attributes:
        img_size: square training canvas S.
        mosaic: use mosaic (stage-1 pipeline).
        mixup: use mixup after mosaic.
        mixup_prob: probability of mixup.
        mixup_ratio_range: (min, max) scale jitter of the mixup partner's canvas (mmdet ``CachedMixUp``
            ``ratio_range``: its default is (0.5, 1.5), the RTMDet-Ins recipe sets (1.0, 1.0)).
        mixup_max_iters: most partners drawn for one mixup until one has an instance (mmdet ``CachedMixUp``
            ``max_iters``, 15); when all are empty the sample is not mixed.
        resize_ratio: (min, max) random resize ratio of the mosaic canvas (2S).
        no_mosaic_resize_ratio: (min, max) random resize ratio in the no-mosaic pipeline (relative to S).
        hsv: (hue, saturation, value) deltas of the YOLOX HSV jitter; None disables it.
        flip_prob: horizontal flip probability.
        min_box_wh: instances with a smaller box side are removed.
        manga_max_tiles: most manga tiles per mosaic.
        manga_hcrop_prob: probability of replacing a landscape manga page by one half.
    """

    img_size: int = 640
    mosaic: bool = True
    mixup: bool = True
    mixup_prob: float = 1.0
    mixup_ratio_range: tuple[float, float] = (1.0, 1.0)
    mixup_max_iters: int = 15
    resize_ratio: tuple[float, float] = (0.1, 2.0)
    no_mosaic_resize_ratio: tuple[float, float] = (0.1, 2.0)
    hsv: tuple[int, int, int] | None = (5, 30, 30)
    flip_prob: float = 0.5
    min_box_wh: float = 1.0
    manga_max_tiles: int = 3
    manga_hcrop_prob: float = 0.75

    def __post_init__(self) -> None:
        if self.img_size < 32 or self.img_size % 32:
            raise ValueError(f"img_size must be a positive multiple of 32, got {self.img_size}")
        if self.mixup_max_iters < 1:
            raise ValueError(f"mixup_max_iters must be >= 1, got {self.mixup_max_iters}")


# ----------------------------------------------------------------------------------------------- helpers
def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes ``[N,4]`` float32 of masks ``[N,H,W]`` (x2 = last column + 1); empty -> zeros."""
    n = masks.shape[0]
    out = np.zeros((n, 4), np.float32)
    for i in range(n):
        rows = np.flatnonzero(masks[i].any(1))
        cols = np.flatnonzero(masks[i].any(0))
        if rows.size:
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def _subset(sample: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    out = dict(sample)
    for k in ("boxes", "labels", "masks", "ignore_mask"):
        out[k] = sample[k][keep]
    return out


def _resize_masks(masks: np.ndarray, w: int, h: int) -> np.ndarray:
    if masks.shape[0] == 0:
        return np.zeros((0, h, w), np.uint8)
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks])


def _resize(sample: dict[str, Any], w: int, h: int) -> dict[str, Any]:
    w, h = max(1, int(w)), max(1, int(h))
    out = dict(sample)
    out["img"] = cv2.resize(sample["img"], (w, h), interpolation=cv2.INTER_LINEAR)
    out["masks"] = _resize_masks(sample["masks"], w, h)
    out["boxes"] = boxes_from_masks(out["masks"])
    return out


def filter_small(sample: dict[str, Any], min_wh: float = 1.0) -> dict[str, Any]:
    """Recompute boxes from masks and drop instances whose box is smaller than ``min_wh`` on a side."""
    sample = dict(sample)
    sample["boxes"] = boxes_from_masks(sample["masks"])
    b = sample["boxes"]
    keep = ((b[:, 2] - b[:, 0]) >= min_wh) & ((b[:, 3] - b[:, 1]) >= min_wh)
    return _subset(sample, keep)


def random_resize(sample: dict[str, Any], scale: int, ratio: tuple[float, float], rng: np.random.Generator):
    """Keep-ratio resize so the image fits ``scale * r`` (square target), ``r ~ U(ratio)``."""
    r = rng.uniform(*ratio)
    target = scale * r
    h, w = sample["img"].shape[:2]
    f = min(target / h, target / w)
    return _resize(sample, int(w * f + 0.5), int(h * f + 0.5))


def random_crop(sample: dict[str, Any], size: int, rng: np.random.Generator) -> dict[str, Any]:
    """Random ``size x size`` crop (smaller images are kept whole on that axis)."""
    h, w = sample["img"].shape[:2]
    ch, cw = min(size, h), min(size, w)
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    out = dict(sample)
    out["img"] = sample["img"][y0 : y0 + ch, x0 : x0 + cw].copy()
    out["masks"] = sample["masks"][:, y0 : y0 + ch, x0 : x0 + cw].copy()
    out["boxes"] = boxes_from_masks(out["masks"])
    keep = out["masks"].any(axis=(1, 2))  # also for no instances (reshape(0, -1) fails)
    return _subset(out, keep)


def hsv_jitter(img: np.ndarray, deltas: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """YOLOX HSV augmentation on a uint8 BGR image."""
    gains = rng.uniform(-1, 1, 3) * np.asarray(deltas, np.float64)
    gains *= rng.integers(0, 2, 3)
    gains = gains.astype(np.int16)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def hflip(sample: dict[str, Any]) -> dict[str, Any]:
    """Horizontal flip of image, masks and boxes."""
    out = dict(sample)
    w = sample["img"].shape[1]
    out["img"] = sample["img"][:, ::-1].copy()
    out["masks"] = sample["masks"][:, :, ::-1].copy()
    b = sample["boxes"].copy()
    out["boxes"] = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1).astype(np.float32) if len(b) else b
    return out


def pad_to(sample: dict[str, Any], size: int, value: int = PAD_VALUE) -> dict[str, Any]:
    """Pad bottom/right to ``size x size`` (image with ``value``, masks with 0)."""
    h, w = sample["img"].shape[:2]
    if h > size or w > size:
        raise ValueError(f"pad_to: image {h}x{w} is larger than the canvas {size}")
    out = dict(sample)
    img = np.full((size, size, 3), value, np.uint8)
    img[:h, :w] = sample["img"]
    masks = np.zeros((sample["masks"].shape[0], size, size), np.uint8)
    masks[:, :h, :w] = sample["masks"]
    out["img"], out["masks"] = img, masks
    return out


def _hcrop_manga(sample: dict[str, Any], rng: np.random.Generator, prob: float) -> dict[str, Any]:
    h, w = sample["img"].shape[:2]
    if w <= h or rng.random() >= prob:
        return sample
    half = w // 2
    x0 = 0 if rng.random() < 0.5 else w - half
    out = dict(sample)
    out["img"] = sample["img"][:, x0 : x0 + half].copy()
    out["masks"] = sample["masks"][:, :, x0 : x0 + half].copy()
    out["boxes"] = boxes_from_masks(out["masks"])
    keep = out["masks"].any(axis=(1, 2))  # also for no instances (reshape(0, -1) fails)
    return _subset(out, keep)


def mosaic(samples: list[dict[str, Any]], size: int, rng: np.random.Generator) -> dict[str, Any]:
    """Mosaic of 4 samples on a ``2*size`` square canvas (see the module docstring)."""
    if len(samples) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(samples)}")
    canvas_size = 2 * size
    img = np.full((canvas_size, canvas_size, 3), PAD_VALUE, np.uint8)
    cx = int(rng.uniform(0.5, 1.5) * size)
    cy = int(rng.uniform(0.5, 1.5) * size)
    all_masks, labels, ignore = [], [], []
    for i, s in enumerate(samples):
        h0, w0 = s["img"].shape[:2]
        f = min(size / h0, size / w0)
        s = _resize(s, int(w0 * f), int(h0 * f))
        h, w = s["img"].shape[:2]
        if i == 0:  # top-left
            x1, y1, x2, y2 = max(cx - w, 0), max(cy - h, 0), cx, cy
            cx1, cy1 = w - (x2 - x1), h - (y2 - y1)
        elif i == 1:  # top-right
            x1, y1, x2, y2 = cx, max(cy - h, 0), min(cx + w, canvas_size), cy
            cx1, cy1 = 0, h - (y2 - y1)
        elif i == 2:  # bottom-left
            x1, y1, x2, y2 = max(cx - w, 0), cy, cx, min(canvas_size, cy + h)
            cx1, cy1 = w - (x2 - x1), 0
        else:  # bottom-right
            x1, y1, x2, y2 = cx, cy, min(cx + w, canvas_size), min(canvas_size, cy + h)
            cx1, cy1 = 0, 0
        pw, ph = x2 - x1, y2 - y1
        if pw <= 0 or ph <= 0:
            continue
        img[y1:y2, x1:x2] = s["img"][cy1 : cy1 + ph, cx1 : cx1 + pw]
        for j in range(s["masks"].shape[0]):
            m = np.zeros((canvas_size, canvas_size), np.uint8)
            m[y1:y2, x1:x2] = s["masks"][j, cy1 : cy1 + ph, cx1 : cx1 + pw]
            if m.any():
                all_masks.append(m)
                labels.append(s["labels"][j])
                ignore.append(s["ignore_mask"][j])
    masks = np.stack(all_masks) if all_masks else np.zeros((0, canvas_size, canvas_size), np.uint8)
    return {
        "img": img,
        "masks": masks,
        "boxes": boxes_from_masks(masks),
        "labels": np.asarray(labels, np.int64).reshape(-1),
        "ignore_mask": np.asarray(ignore, bool).reshape(-1),
    }


def mixup(sample: dict[str, Any], other: dict[str, Any], rng: np.random.Generator, flip_prob: float = 0.5,
          ratio_range: tuple[float, float] = (1.0, 1.0), pad_value: int = PAD_VALUE) -> dict[str, Any]:
    """Blend ``other`` into ``sample`` 0.5/0.5 by mmdet ``CachedMixUp``'s geometry (module docstring, step 6).

    Draws, in order: the scale jitter ``j ~ U(ratio_range)``, the flip (``rng.random() < flip_prob``), then the
    crop offsets (y, then x, each only where the jittered canvas is larger than ``sample``). Masks follow the
    pixels (nearest-neighbour resizes); boxes are recomputed from them.
    """
    if len(other["labels"]) == 0:  # mmdet: a partner without boxes is not mixed in
        return sample
    h, w = sample["img"].shape[:2]
    jit = float(rng.uniform(*ratio_range))
    flip = bool(rng.random() < flip_prob)
    # 1-2. keep-ratio fit into an h x w canvas of pad_value, top left
    oh, ow = other["img"].shape[:2]
    f = min(h / oh, w / ow)
    other = _resize(other, int(ow * f), int(oh * f))
    oh, ow = other["img"].shape[:2]
    canvas = np.full((h, w, 3), pad_value, np.uint8)
    canvas[:oh, :ow] = other["img"]
    masks = np.zeros((other["masks"].shape[0], h, w), np.uint8)
    masks[:, :oh, :ow] = other["masks"]
    # 3. scale jitter of the whole canvas
    jw, jh = max(1, int(w * jit)), max(1, int(h * jit))
    if (jw, jh) != (w, h):
        canvas = cv2.resize(canvas, (jw, jh), interpolation=cv2.INTER_LINEAR)
        masks = _resize_masks(masks, jw, jh)
    # 4. flip of the whole canvas
    if flip:
        canvas, masks = canvas[:, ::-1], masks[:, :, ::-1]
    # 5. into a zero canvas of at least h x w (mmdet pads with 0 here, not pad_value), random h x w crop
    ph, pw = max(jh, h), max(jw, w)
    padded = np.zeros((ph, pw, 3), np.uint8)
    padded[:jh, :jw] = canvas
    padded_masks = np.zeros((masks.shape[0], ph, pw), np.uint8)
    padded_masks[:, :jh, :jw] = masks
    y0 = int(rng.integers(0, ph - h)) if ph > h else 0
    x0 = int(rng.integers(0, pw - w)) if pw > w else 0
    crop = padded[y0 : y0 + h, x0 : x0 + w]
    crop_masks = padded_masks[:, y0 : y0 + h, x0 : x0 + w]
    keep = crop_masks.any(axis=(1, 2))  # partner instances outside the crop are dropped
    out = dict(sample)
    out["img"] = (0.5 * sample["img"].astype(np.float32) + 0.5 * crop.astype(np.float32)).astype(np.uint8)
    out["masks"] = np.concatenate([sample["masks"], crop_masks[keep]])
    out["boxes"] = boxes_from_masks(out["masks"])
    out["labels"] = np.concatenate([sample["labels"], other["labels"][keep]])
    out["ignore_mask"] = np.concatenate([sample["ignore_mask"], other["ignore_mask"][keep]])
    return out


# ----------------------------------------------------------------------------------------------- dataset
class DetectionTrainSet(Dataset):
    """Augmented stage-1 training samples from a :class:`~cartoonseg.training.coco.CocoSet`.

    Args:
        coco: the parsed training set.
        aug: :class:`DetAugConfig`.
        seed: base seed of the per-sample generators.
    """

    def __init__(self, coco: CocoSet, aug: DetAugConfig | None = None, seed: int = 0) -> None:
        self.coco = coco
        self.aug = aug or DetAugConfig()
        self.seed = int(seed)
        self.epoch = 0
        self.strong = self.aug.mosaic
        self._manga = np.array([im.is_manga for im in coco.images], bool)
        self._any_instances = any(im.annotations for im in coco.images)

    def __len__(self) -> int:
        return len(self.coco)

    def set_epoch(self, epoch: int, strong: bool | None = None) -> None:
        """Select the generator stream of ``epoch``; ``strong=False`` switches to the no-mosaic pipeline."""
        self.epoch = int(epoch)
        if strong is not None:
            self.strong = bool(strong) and self.aug.mosaic

    def load(self, index: int) -> dict[str, Any]:
        """The raw (un-augmented) sample ``index``: original image, masks, boxes, labels, ignore flags."""
        image: CocoImage = self.coco.images[index]
        img = read_image_bgr(image.path)
        if img.shape[:2] != (image.height, image.width):
            raise ValueError(
                f"{image.path}: image is {img.shape[1]}x{img.shape[0]} but the annotation says "
                f"{image.width}x{image.height}"
            )
        masks, ignore = instance_masks(image)
        labels = np.asarray([a.label for a in image.annotations], np.int64)
        return {"img": img, "masks": masks, "boxes": boxes_from_masks(masks), "labels": labels, "ignore_mask": ignore}

    def _pick_partners(self, index: int, rng: np.random.Generator) -> list[int]:
        n = len(self)
        for _ in range(10):
            picks = [int(i) for i in rng.integers(0, n, 3)]
            if int(self._manga[[index] + picks].sum()) <= self.aug.manga_max_tiles:
                return picks
        return picks

    def _strong_sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        a = self.aug
        idx = [index] + self._pick_partners(index, rng)
        parts = []
        for i in idx:
            s = self.load(i)
            if self._manga[i]:
                s = _hcrop_manga(s, rng, a.manga_hcrop_prob)
            parts.append(s)
        s = mosaic(parts, a.img_size, rng)
        s = random_resize(s, 2 * a.img_size, a.resize_ratio, rng)
        return self._finish(s, rng)

    def _finish(self, s: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        a = self.aug
        s = random_crop(s, a.img_size, rng)
        if a.hsv is not None:
            s = dict(s, img=hsv_jitter(s["img"], a.hsv, rng))
        if rng.random() < a.flip_prob:
            s = hflip(s)
        return pad_to(s, a.img_size)

    def _mixup_partner(self, rng: np.random.Generator) -> dict[str, Any]:
        """The mixup partner as mmdet ``CachedMixUp.get_indexes`` draws it: up to ``mixup_max_iters`` strong
        samples until one has an instance, else the last one (which :func:`mixup` then leaves out). A partner is
        often empty (the random crop of a large resize can miss every instance); without the retries such samples
        went unmixed. A set without any instance has one draw: every other would be empty too."""
        tries = self.aug.mixup_max_iters if self._any_instances else 1
        for _ in range(tries):
            other = self._strong_sample(int(rng.integers(0, len(self))), rng)
            if len(other["labels"]):
                break
        return other

    def sample(self, index: int) -> dict[str, Any]:
        """The augmented sample (numpy) for the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        a = self.aug
        if self.strong:
            s = self._strong_sample(index, rng)
            if a.mixup and rng.random() < a.mixup_prob:
                s = mixup(s, self._mixup_partner(rng), rng, a.flip_prob, a.mixup_ratio_range)
        else:
            s = random_resize(self.load(index), a.img_size, a.no_mosaic_resize_ratio, rng)
            s = self._finish(s, rng)
        return filter_small(s, a.min_box_wh)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        s = self.sample(index)
        return {
            "img": torch.from_numpy(np.ascontiguousarray(s["img"].transpose(2, 0, 1))),
            "boxes": torch.from_numpy(s["boxes"].astype(np.float32)),
            "labels": torch.from_numpy(s["labels"].astype(np.int64)),
            "masks": torch.from_numpy(s["masks"].astype(np.uint8)),
            "ignore_mask": torch.from_numpy(s["ignore_mask"].astype(bool)),
        }


def collate_detection(batch: list[dict[str, Tensor]]) -> dict[str, Any]:
    """Stack images into uint8 ``[B,3,S,S]`` BGR; keep per-image targets as a list of dicts."""
    return {
        "img": torch.stack([b["img"] for b in batch]),
        "targets": [{k: v for k, v in b.items() if k != "img"} for b in batch],
    }
