"""Training of both CartoonSegmentation stages (arXiv 2312.01943 §4) in plain PyTorch.

* :mod:`.losses`: QFL, GIoU, Dice, structure (PPA) loss, feature MSE, stage-2 totals;
* :mod:`.assigner`: dynamic soft label assignment;
* :mod:`.rtmdet_loss`: RTMDet-Ins targets and loss over the raw head outputs (ignore-mask rule);
* :mod:`.coco`, :mod:`.det_data`, :mod:`.refine_data`: COCO reading, RTMDet-Ins augmentations, refiner data
  with coarse-mask simulation;
* :mod:`.optim`, :mod:`.engine`, :mod:`.distributed`, :mod:`.state`: AdamW groups, warm-up + cosine, EMA, the
  DDP-capable loop, resumable checkpoints;
* :mod:`.detector`, :mod:`.refiner`: the two stage recipes (:func:`train_detector`, :func:`train_refiner`);
* :mod:`.predictions`: attaching stage-1 predictions to a training set for the refiner;
* :mod:`.toy`: a tiny procedural dataset for tests.
"""

from .detector import DetectorTrainConfig, train_detector
from .refiner import RefinerTrainConfig, train_refiner

__all__ = ["DetectorTrainConfig", "RefinerTrainConfig", "train_detector", "train_refiner"]
