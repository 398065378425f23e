"""Network definitions: RTMDet-Ins detector (stage 1) and IS-Net refiner (stage 2)."""

from .isnet import ISNetDIS, ISNetGTEncoder
from .rtmdet_ins import Detections, HeadOutputs, RTMDetIns, batched_nms, nms

__all__ = ["RTMDetIns", "HeadOutputs", "Detections", "ISNetDIS", "ISNetGTEncoder", "nms", "batched_nms"]
