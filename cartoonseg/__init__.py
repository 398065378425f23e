"""cartoonseg: instance-guided cartoon editing (Lin et al., arXiv 2312.01943) in pure PyTorch.

Quick start::

    import cartoonseg
    det = cartoonseg.load_detector(cartoonseg.resolve_weights("detector"))
    ref = cartoonseg.load_refiner(cartoonseg.resolve_weights("refiner"))
    instances = cartoonseg.Segmenter(det, ref)(rgb_uint8_image)   # boxes xyxy, scores, soft masks [N,H,W]
"""

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
