"""Instance-aware 3D Ken Burns effect in plain PyTorch (CartoonSegmentation, arXiv 2312.01943, §6.1, on top of
Niklaus et al. 2019): camera paths, point-cloud splatting, end-view disocclusion inpainting (PatchMatch or a
diffusion pass), far-side hole filling, layered rendering and depth of field. Runs on CPU and GPU; no cupy, no CUDA
source strings.

Quick use::

    from cartoonseg.kenburns import CameraPath, KenBurnsConfig, render_kenburns
    clip = render_kenburns(image_hw3, depth_hw, masks=instances, background=plate_hw3,
                           camera=CameraPath(preset="auto", frames=75, playback=True),
                           config=KenBurnsConfig(fill="patchmatch"))
    clip.frames       # [T,H,W,3] RGB in [0,1]
    clip.disocclusion # [T,H,W]
"""

from .camera import ANCHORS, EASINGS, PRESETS, CameraPath, CameraPoses, ease, playback_order, resolve_poses
from .disocclusion import (
    CHARACTER_REVEALS,
    FILLS,
    KeyViewReport,
    Refiner,
    diffusers_refiner,
    inpaint_disocclusions,
    make_refiner,
)
from .dof import bokeh_blur, focus_schedule
from .fill import fill_holes_far, fill_push_pull, fill_rows
from .pointcloud import PointCloud, SplatResult, project, splat, unproject
from .render import (KenBurnsConfig, KenBurnsResult, Scene, build_scene, frame_size, inpaint_scene, render_kenburns,
                     render_poses)

__all__ = [
    "ANCHORS",
    "CHARACTER_REVEALS",
    "EASINGS",
    "FILLS",
    "PRESETS",
    "CameraPath",
    "CameraPoses",
    "KenBurnsConfig",
    "KenBurnsResult",
    "KeyViewReport",
    "PointCloud",
    "Refiner",
    "Scene",
    "SplatResult",
    "bokeh_blur",
    "build_scene",
    "diffusers_refiner",
    "ease",
    "fill_holes_far",
    "fill_push_pull",
    "fill_rows",
    "focus_schedule",
    "frame_size",
    "inpaint_disocclusions",
    "inpaint_scene",
    "make_refiner",
    "playback_order",
    "project",
    "render_kenburns",
    "render_poses",
    "resolve_poses",
    "splat",
    "unproject",
]
