"""COCO records of segmented images, and the merge of per-image records into one COCO file.

One image's record (what a shard stores per image, JSON)::

    {"height": H, "width": W, "annotations": [ANN, ...]}      or {"error": "cannot read image ..."}

with ``ANN`` = ``{"category_id", "bbox" (xywh, the detector's box clipped to the image, 2 decimals), "area"
(pixels of the binary mask), "score" (6 decimals), "iscrowd": 0, "segmentation" (COCO RLE with str counts, the
project's one codec :mod:`cartoonseg.rle`)}`` and, when tagging, the reference's ``"tag_string"`` /
``"tag_string_character"`` (space-joined, most probable first) plus ``"tag_scores"`` ({tag: probability}).

:func:`merge` numbers the annotations 1, 2, ... in image order, so the same inputs always give the same file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import rle
from ..data.synthesis import CATEGORIES
from ..structures import Instances
from .inputs import ImageItem

__all__ = ["CATEGORIES", "GENERATOR", "image_record", "merge"]

#: ``info.description`` of every file this command writes (how a rerun recognises its own output)
GENERATOR = "cartoonseg annotate"


def _tag_fields(tags: Mapping[str, float] | None, character: Mapping[str, float] | None) -> dict[str, Any]:
    tags = dict(tags or {})
    character = dict(character or {})
    return {
        "tag_string": " ".join(tags),
        "tag_string_character": " ".join(character),
        "tag_scores": {k: round(float(v), 4) for k, v in tags.items()},
    }


def image_record(instances: Instances, category_ids: Sequence[int] = (0,)) -> dict[str, Any]:
    """The per-image record (see the module docstring) of one image's instances. Tags come from
    ``instances.extras["tags"]`` / ``["character_tags"]`` when present (:func:`cartoonseg.tagger.tag_instances`)."""
    h, w = instances.image_size
    binary = instances.binary.cpu().numpy()
    boxes = instances.boxes.detach().float().cpu().numpy()
    scores = instances.scores.detach().float().cpu().numpy()
    labels = instances.labels.cpu().numpy()
    tagged = "tags" in instances.extras
    anns = []
    for i in range(len(instances)):
        label = int(labels[i])
        if not 0 <= label < len(category_ids):
            raise ValueError(f"instance label {label} has no category (categories: {list(category_ids)})")
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        x1, x2 = min(max(x1, 0.0), float(w)), min(max(x2, 0.0), float(w))
        y1, y2 = min(max(y1, 0.0), float(h)), min(max(y2, 0.0), float(h))
        ann = {
            "category_id": int(category_ids[label]),
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "area": int(np.count_nonzero(binary[i])),
            "score": round(float(scores[i]), 6),
            "iscrowd": 0,
            "segmentation": rle.encode(binary[i]),
        }
        if tagged:
            ann.update(_tag_fields(instances.extras["tags"][i], instances.extras.get("character_tags", [None] * len(instances))[i]))
        anns.append(ann)
    return {"height": int(h), "width": int(w), "annotations": anns}


def merge(items: Sequence[ImageItem], records: Sequence[Mapping[str, Any]], *,
          settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One COCO dict from per-image records (in ``items`` order). Images whose record is an error are left out of
    ``images`` and listed in ``info["skipped"]``; annotation ids are 1, 2, ... in image order."""
    if len(items) != len(records):
        raise ValueError(f"{len(items)} images but {len(records)} records")
    images, annotations, skipped = [], [], []
    for item, record in zip(items, records):
        if "error" in record:
            skipped.append({"file_name": item.file_name, "error": str(record["error"])})
            continue
        images.append({"id": item.image_id, "file_name": item.file_name, "height": int(record["height"]),
                       "width": int(record["width"])})
        for ann in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": item.image_id, **ann})
    info = {"description": GENERATOR, "settings": dict(settings or {}), "skipped": skipped}
    return {"info": info, "licenses": [], "categories": [dict(c) for c in CATEGORIES], "images": images,
            "annotations": annotations}
