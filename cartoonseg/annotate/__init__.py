"""Dataset-scale annotation (the reference's ``infer(..., save_annotation=...)``): segment a whole image
collection into one COCO file with RLE masks, boxes, scores and optional per-instance booru tags; resumable, and
sharded over any number of processes and nodes with ``torchrun`` (:mod:`cartoonseg.sharding`).

Library use::

    from cartoonseg.annotate import annotate, collect_inputs
    items = collect_inputs(["images/", "more.txt"])
    coco = annotate(segmenter, items, "annotations.json")

Command line: ``python -m cartoonseg annotate --help`` (:mod:`cartoonseg.annotate.cli`).
"""

from .coco import CATEGORIES, GENERATOR, image_record, merge
from .inputs import IMAGE_SUFFIXES, ImageItem, collect_inputs
from .run import annotate, default_work_dir, write_output

__all__ = ["CATEGORIES", "GENERATOR", "IMAGE_SUFFIXES", "ImageItem", "annotate", "collect_inputs",
           "default_work_dir", "image_record", "merge", "write_output"]
