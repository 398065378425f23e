"""Every network of the package, each with its own checkpoint filter (timm style): RTMDet-Ins detector (stage 1,
:func:`~cartoonseg.models.rtmdet_ins.filter_mmdet_rtmdet_ins`), IS-Net refiner (stage 2,
:func:`~cartoonseg.models.isnet.filter_isnet`) and the SwinV2 booru tagger backbone
(:func:`~cartoonseg.models.swinv2.filter_timm_swinv2`). Builders: :mod:`cartoonseg.build`."""

from .isnet import ISNetDIS, ISNetGTEncoder
from .rtmdet_ins import Detections, HeadOutputs, RTMDetIns, batched_nms, nms
from .swinv2 import SwinTransformerV2, SwinV2Config
from .weights import CheckpointError

__all__ = [
    "CheckpointError",
    "Detections",
    "HeadOutputs",
    "ISNetDIS",
    "ISNetGTEncoder",
    "RTMDetIns",
    "SwinTransformerV2",
    "SwinV2Config",
    "batched_nms",
    "nms",
]
