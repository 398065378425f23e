"""One image's segmentation results as files: the folder ``python -m cartoonseg segment`` writes per image (and
``annotate --per-image``), next to the library's image writers of :mod:`cartoonseg.io`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import rle
from .io import write_image
from .matting import cutouts
from .outputs import atomic_path
from .visualize import overlay

__all__ = ["write_instances"]


def write_instances(instances, image: np.ndarray, out_dir: str | os.PathLike,
                    source: str | os.PathLike | None = None) -> Path:
    """One image's :class:`~cartoonseg.structures.Instances` as a folder (what ``python -m cartoonseg segment``
    writes per image): ``instances.json`` (the ``source`` image when given, boxes xyxy, scores, labels, COCO RLE
    masks), ``mask_NNN.png`` (soft masks) and ``overlay.png`` (:func:`cartoonseg.visualize.overlay` on ``image``);
    with alpha mattes (``instances.alphas``) also ``alpha_NNN.png`` and the RGBA cut-out ``cutout_NNN.png``. Each
    file is written atomically; commands call it on a result folder of :mod:`cartoonseg.outputs` (``res.path``),
    which is swapped in whole. Returns the folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = instances.binary.cpu().numpy()
    records = []
    for i in range(len(instances)):
        records.append(
            {
                "id": int(instances.ids[i]),
                "bbox_xyxy": [round(float(v), 3) for v in instances.boxes[i].tolist()],
                "score": round(float(instances.scores[i]), 6),
                "label": int(instances.labels[i]),
                "area": int(binary[i].sum()),
                "segmentation": rle.encode(binary[i]),
                "mask_png": f"mask_{i:03d}.png",
            }
        )
        write_image(out_dir / f"mask_{i:03d}.png", instances.masks[i])
    if instances.alphas is not None:
        for i, rgba in enumerate(cutouts(image, instances)):
            records[i]["alpha_png"], records[i]["cutout_png"] = f"alpha_{i:03d}.png", f"cutout_{i:03d}.png"
            write_image(out_dir / f"alpha_{i:03d}.png", instances.alphas[i])
            write_image(out_dir / f"cutout_{i:03d}.png", rgba, alpha="keep")
    h, w = instances.image_size
    meta = {"image_size": [h, w], "mask_thr": instances.mask_thr, "instances": records}
    if source is not None:
        meta = {"source": str(source), **meta}
    with atomic_path(out_dir / "instances.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    write_image(out_dir / "overlay.png", overlay(image, instances))
    return out_dir
