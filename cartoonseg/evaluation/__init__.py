"""Evaluation of cartoon instance segmentation: COCO Box AP / Mask AP and Boundary AP (Paper §5, Table 1-2).

* COCO RLE and polygons: :mod:`cartoonseg.rle` (also reachable as ``cartoonseg.evaluation.rle``);
* :mod:`cartoonseg.evaluation.coco_eval`: the COCO protocol (pycocotools ``COCOeval`` semantics) for
  ``bbox``, ``segm`` and ``boundary`` IoU types;
* :mod:`cartoonseg.evaluation.predict`: runs a detector (and optionally the refiner) over a COCO image set
  and writes COCO results.
"""

from .. import rle  # noqa: F401 - the package's one RLE module, re-exported for evaluation users
from .coco_eval import IOU_TYPES, EvalParams, evaluate, evaluate_all, mask_to_boundary

__all__ = ["IOU_TYPES", "EvalParams", "evaluate", "evaluate_all", "mask_to_boundary", "rle"]
