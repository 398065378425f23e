"""COCO person-box layouts: the file CartoonSegmentation expects but never shipped, and its sampler.

The paper (arXiv 2312.01943, §3.2, Fig. 3c) places subjects "guided by the ground truth bounding boxes from a
randomly selected photo in the MSCOCO dataset, which includes > N_subj instances labeled person". The code
(CS ``animeinsseg/data/sampler.py`` L60-154) reads ``data/cocoperson_bbox_samples.json``, a list whose items are
box arrays or ``{"bboxes": [...]}`` of **normalised xywh** boxes, each group translated so its min x and min y
are 0. That file is not in the repository; :func:`extract_person_groups` builds it from a COCO
``instances_*.json`` (an assumption, since the original builder was not released: images with >= 2 non-crowd persons, boxes
divided by max(W, H) so the aspect ratio is kept).

File format written by :func:`write_person_groups`: a JSON list of
``{"image_id": int, "bboxes": [[x, y, w, h], ...]}`` (floats, normalised, group min x/y = 0).

:class:`PersonBoxSampler` implements ``sample_matchfg``: pick a group, scale by ``tgt * U(1.1, 1.8)``, shift it
randomly so its union fits the canvas where possible, keep boxes with ``max(w, h) < 0.85 tgt`` and
``min(w, h) > 0.02 tgt`` (sizes clipped to the canvas), redraw until at least one box survives.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import outputs

__all__ = ["extract_person_groups", "write_person_groups", "load_person_groups", "PersonBoxSampler"]


def extract_person_groups(instances: str | Path | dict, min_persons: int = 2, person_category: str = "person",
                          skip_crowd: bool = True, min_box_frac: float = 0.0) -> list[dict]:
    """Normalised person-box groups from a COCO instances annotation (file path or loaded dict).

    Args:
        instances: COCO ``instances_*.json`` path, or its parsed dict.
        min_persons: keep images with at least this many (non-crowd) person boxes.
        person_category: category name of persons.
        skip_crowd: ignore ``iscrowd`` annotations.
        min_box_frac: ignore boxes whose longer side is under this fraction of max(W, H).

    Returns:
        ``[{"image_id": int, "bboxes": [[x, y, w, h], ...]}]`` sorted by image id; boxes divided by max(W, H)
        and translated so the group's min x and min y are 0.
    """
    if isinstance(instances, (str, Path)):
        try:
            with open(instances, encoding="utf-8") as fh:
                data = json.load(fh)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # e.g. an image given by mistake
            raise ValueError(f"{instances} is not a JSON file: {exc}") from None
    else:
        data = instances
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise ValueError("not a COCO instances file: needs 'images', 'annotations' and 'categories'")
    try:
        cat_ids = {c["id"] for c in data["categories"] if c.get("name") == person_category}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed COCO 'categories' (each needs an 'id' and a 'name'): {exc!r}") from None
    if not cat_ids:
        raise ValueError(f"COCO file has no category named {person_category!r}")
    try:
        sizes = {img["id"]: (float(img["width"]), float(img["height"])) for img in data["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed COCO 'images' (each needs an 'id', a 'width' and a 'height'): {exc!r}") from None
    boxes: dict[int, list] = defaultdict(list)
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            raise ValueError(f"malformed COCO annotation {ann!r}: expected an object")
        if ann.get("category_id") not in cat_ids or (skip_crowd and ann.get("iscrowd", 0)):
            continue
        if ann.get("image_id") not in sizes:
            continue
        w_img, h_img = sizes[ann["image_id"]]
        scale = max(w_img, h_img)
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed COCO annotation {ann.get('id', '?')}: 'bbox' must be [x, y, w, h] "
                             f"({exc!r})") from None
        if w <= 0 or h <= 0 or max(w, h) < min_box_frac * scale:
            continue
        boxes[ann["image_id"]].append([x / scale, y / scale, w / scale, h / scale])
    groups = []
    for image_id in sorted(boxes):
        group = np.asarray(boxes[image_id], np.float64)
        if len(group) < min_persons:
            continue
        group[:, 0] -= group[:, 0].min()
        group[:, 1] -= group[:, 1].min()
        groups.append({"image_id": int(image_id), "bboxes": np.round(group, 6).tolist()})
    return groups


def write_person_groups(groups: list[dict], path: str | Path, *, inputs=(), overwrite: bool = False) -> None:
    """Write groups as JSON (see the module docstring) under the output policy of :mod:`cartoonseg.outputs`: never
    over one of ``inputs``, never over a file cartoonseg did not write unless ``overwrite``; atomic."""
    outputs.write_json(path, groups, indent=None, inputs=inputs, overwrite=overwrite)


def load_person_groups(path: str | Path) -> list[np.ndarray]:
    """Read a person-box file (ours, or the original's list of box arrays / ``{"bboxes"}``) as a list of
    ``float64 [K,4]`` normalised xywh groups translated to min x/y = 0 (empty groups dropped)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a person-box file must hold a JSON list, got {type(data).__name__}")
    out = []
    for n, item in enumerate(data):
        if isinstance(item, dict) and "bboxes" not in item:
            raise ValueError(f"{path}: item {n} has no 'bboxes' (expected a list of [x, y, w, h] boxes, or "
                             f"{{\"bboxes\": [...]}})")
        boxes = item["bboxes"] if isinstance(item, dict) else item
        try:
            arr = np.asarray(boxes, np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: item {n} is not a list of [x, y, w, h] number boxes ({exc})") from None
        if arr.size == 0:
            continue
        if arr.size % 4 or (arr.ndim == 2 and arr.shape[1] != 4) or arr.ndim > 2:
            raise ValueError(f"{path}: item {n} is not a list of [x, y, w, h] boxes (shape {list(arr.shape)})")
        arr = arr.reshape(-1, 4)
        if not np.isfinite(arr).all() or (arr[:, 2:] <= 0).any():
            raise ValueError(f"{path}: item {n} has a box that is not finite or has a width/height <= 0")
        arr = arr.copy()
        arr[:, 0] -= arr[:, 0].min()
        arr[:, 1] -= arr[:, 1].min()
        out.append(arr)
    if not out:
        raise ValueError(f"{path}: no person-box groups")
    return out


class PersonBoxSampler:
    """Sampling of canvas-sized person-box layouts (``sample_matchfg`` of the original).

    Args:
        groups: normalised xywh groups (:func:`load_person_groups`).
        scale_range: the group is multiplied by ``tgt * U(scale_range)``.
        max_side, min_side: box filters as fractions of ``tgt`` (on sizes clipped to the canvas).
        max_tries: redraws before giving up (raises ``ValueError``).
    """

    def __init__(self, groups: list[np.ndarray], scale_range=(1.1, 1.8), max_side: float = 0.85,
                 min_side: float = 0.02, max_tries: int = 100):
        if not groups:
            raise ValueError("PersonBoxSampler needs at least one box group")
        self.groups = [np.asarray(g, np.float64).reshape(-1, 4) for g in groups]
        self.scale_range = scale_range
        self.max_side = max_side
        self.min_side = min_side
        self.max_tries = max_tries

    def sample(self, rng: np.random.Generator, tgt: int) -> np.ndarray:
        """One layout: ``float64 [K,4]`` xyxy boxes in canvas pixels, clipped to the canvas (K >= 1), in the
        group's order."""
        for _ in range(self.max_tries):
            group = self.groups[int(rng.integers(len(self.groups)))].copy()
            group *= tgt * float(rng.uniform(*self.scale_range))
            xyxy = np.concatenate([group[:, :2], group[:, :2] + group[:, 2:]], axis=1)
            span_w = xyxy[:, 2].max()
            span_h = xyxy[:, 3].max()
            # shift so the union fits where possible; otherwise a random shift that keeps it overlapping
            dx = rng.uniform(0, tgt - span_w) if span_w <= tgt else -rng.uniform(0, span_w - tgt)
            dy = rng.uniform(0, tgt - span_h) if span_h <= tgt else -rng.uniform(0, span_h - tgt)
            xyxy[:, [0, 2]] += dx
            xyxy[:, [1, 3]] += dy
            clipped = np.clip(xyxy, 0, tgt)
            cw = clipped[:, 2] - clipped[:, 0]
            ch = clipped[:, 3] - clipped[:, 1]
            keep = (np.maximum(cw, ch) < self.max_side * tgt) & (np.minimum(cw, ch) > self.min_side * tgt)
            if keep.any():
                return clipped[keep]
        raise ValueError(f"no person-box layout with a usable box after {self.max_tries} draws: the groups' boxes, "
                         f"scaled by {self.scale_range[0]}-{self.scale_range[1]} x the canvas, are all wider or "
                         f"taller than {self.max_side} or narrower than {self.min_side} of it (normalised xywh "
                         f"boxes divided by max(W, H) are expected)")
