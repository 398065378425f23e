"""Depth (paper §6.1): a monocular depth estimate, then one depth layer per character.

* :mod:`~cartoonseg.depth.estimator`: Depth Anything V2 through ``transformers`` (download, local loading, the
  estimator), and depth maps made elsewhere (:func:`disparity_from_image`);
* :mod:`~cartoonseg.depth.pooling`: instance depth pooling (mean / median / the original's "feet" rule), overlap
  resolution and z-order;
* :mod:`~cartoonseg.depth.cli`: ``python -m cartoonseg depth|depth-pool`` (or ``python -m cartoonseg.depth``).

Convention: disparity-like maps, larger = nearer (as ComfyUI depth IMAGEs).
"""

from .estimator import (
    DEPTH_MODELS,
    DepthEstimator,
    DepthModelSpec,
    DepthResult,
    depth_to_image,
    disparity_from_image,
    load_depth_model,
    resolve_depth_model,
)
from .pooling import POOL_MODES, PooledDepth, pool_instance_depth, pool_value, z_order_instances

__all__ = [
    "DEPTH_MODELS",
    "POOL_MODES",
    "DepthEstimator",
    "DepthModelSpec",
    "DepthResult",
    "PooledDepth",
    "depth_to_image",
    "disparity_from_image",
    "load_depth_model",
    "pool_instance_depth",
    "pool_value",
    "resolve_depth_model",
    "z_order_instances",
]
