"""Depth (paper §6.1): a monocular depth estimate, then one depth layer per character.

* :mod:`~cartoonseg.depth.estimator`: the depth models (:data:`DEPTH_MODELS`: Depth Anything V2, ZoeDepth,
  Marigold), their download and local loading (:func:`load_depth_model`), the Depth Anything estimator, and depth
  maps made elsewhere (:func:`disparity_from_image`);
* :mod:`~cartoonseg.depth.result`: :class:`DepthResult`, what every estimator returns, and the conventions they
  share;
* :mod:`~cartoonseg.depth.zoedepth`: ZoeDepth through ``transformers``;
* :mod:`~cartoonseg.depth.marigold`: Marigold through ``diffusers`` (optional extra ``diffusion``);
* :mod:`~cartoonseg.depth.pooling`: instance depth pooling (mean / median / the original's "feet" rule), overlap
  resolution and z-order;
* :mod:`~cartoonseg.depth.cli`: ``python -m cartoonseg depth|depth-pool`` (or ``python -m cartoonseg.depth``).

Convention: disparity-like maps, larger = nearer (as ComfyUI depth IMAGEs).
"""

from .estimator import (
    DEPTH_MODELS,
    FAMILIES,
    DepthEstimator,
    DepthModelSpec,
    depth_to_image,
    disparity_from_image,
    family_of,
    load_depth_model,
    resolve_depth_model,
)
from .pooling import POOL_MODES, PooledDepth, pool_instance_depth, pool_value, z_order_instances
from .result import DepthResult

__all__ = [
    "DEPTH_MODELS",
    "FAMILIES",
    "POOL_MODES",
    "DepthEstimator",
    "DepthModelSpec",
    "DepthResult",
    "PooledDepth",
    "depth_to_image",
    "disparity_from_image",
    "family_of",
    "load_depth_model",
    "pool_instance_depth",
    "pool_value",
    "resolve_depth_model",
    "z_order_instances",
]
