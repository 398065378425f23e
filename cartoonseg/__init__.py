"""cartoonseg: instance-guided cartoon editing (Lin et al., arXiv 2312.01943) in pure PyTorch.

Quick start::

    import cartoonseg
    det = cartoonseg.load_detector(cartoonseg.resolve_weights("detector"))
    ref = cartoonseg.load_refiner(cartoonseg.resolve_weights("refiner"))
    instances = cartoonseg.Segmenter(det, ref)(rgb_uint8_image)   # boxes xyxy, scores, soft masks [N,H,W]

Importing the package before torch (as ``python -m cartoonseg``, the ``train`` scripts and ``torchrun`` workers
do) makes OpenMP threads sleep instead of spin while they wait (``OMP_WAIT_POLICY=PASSIVE``, only when the
variable is unset): on a CPU shared with other work, spinning threads starve the thread that holds the work and
2 threads ran 2-60x slower than 1 (see README "Performance"). Set ``OMP_WAIT_POLICY`` yourself to choose otherwise.
"""

import os as _os
import sys as _sys

if "torch" not in _sys.modules:  # libgomp reads the policy once, when torch loads it
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .build import build_detector, build_refiner
from .checkpoint import CheckpointError, convert, load_detector, load_refiner, save_weights
from .config import DETECTOR_PRESETS, REFINER_PRESETS, DetectorConfig, RefinerConfig
from .hub import RELEASED_WEIGHTS, REPO_ID, WeightsSpec, WeightsUnavailableError, resolve_weights
from .segmenter import Segmenter
from .structures import Instances
from .tagger import load_tagger

__version__ = "0.1.0"

__all__ = [
    "Instances",
    "Segmenter",
    "load_tagger",
    "load_detector",
    "load_refiner",
    "build_detector",
    "build_refiner",
    "save_weights",
    "convert",
    "resolve_weights",
    "RELEASED_WEIGHTS",
    "REPO_ID",
    "WeightsSpec",
    "WeightsUnavailableError",
    "CheckpointError",
    "DetectorConfig",
    "RefinerConfig",
    "DETECTOR_PRESETS",
    "REFINER_PRESETS",
]
