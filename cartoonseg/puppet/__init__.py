"""Puppet animation from one illustration or manga page (CartoonSegmentation, arXiv 2312.01943, §6.3): each
character instance becomes a mesh rigged to a skeleton and deformed as-rigid-as-possible (Igarashi et al. 2005,
the method of Animated Drawings, Smith et al. 2023), driven by a reference animation (POSE_KEYPOINT sequence or
BVH, retargeted by bone angles), keyframed handles or a procedural preset, and composited back to front over the
inpainted background plate. numpy / scipy / OpenCV on the CPU.

Quick use::

    from cartoonseg.puppet import PresetMotion, animate, build_rig
    rig = build_rig(instances)                       # automatic skeletons (or poses=POSE_KEYPOINT, handles=JSON)
    clip = animate(image_hw3, rig, PresetMotion("wave"), frames=36, fps=12)   # PatchMatch plate by default
    clip.frames  # [T,H,W,3] float in [0,1];  clip.masks  # [T,H,W] the characters' visible alpha per frame
"""

from .arap import ARAPDeformer
from .bvh import BVH, BVH_TO_OPENPOSE, load_bvh, parse_bvh, project_bvh
from .mesh import Mesh, MeshConfig, build_mesh, mask_support
from .motion import (
    PRESETS,
    RETARGET_MODES,
    KeyframeMotion,
    PresetMotion,
    RetargetMotion,
    bone_angles,
    fk_from_angles,
    parse_keyframes,
    pose_tracks,
)
from .preview import draw_rig
from .render import (
    PuppetClip,
    PuppetRenderer,
    animate,
    background_plate,
    default_frames,
    joint_sequences,
    render_frames,
)
from .rig import Character, PuppetRig, RigConfig, StillLayer, build_character, build_rig
from .skeleton import (
    OPENPOSE_JOINTS,
    OPENPOSE_PARENTS,
    PersonPose,
    Skeleton,
    auto_skeleton,
    match_people,
    parse_handles,
    parse_pose_keypoint,
    skeleton_from_points,
)

__all__ = [
    "BVH",
    "BVH_TO_OPENPOSE",
    "OPENPOSE_JOINTS",
    "OPENPOSE_PARENTS",
    "PRESETS",
    "RETARGET_MODES",
    "ARAPDeformer",
    "Character",
    "KeyframeMotion",
    "Mesh",
    "MeshConfig",
    "PersonPose",
    "PresetMotion",
    "PuppetClip",
    "PuppetRenderer",
    "PuppetRig",
    "RetargetMotion",
    "RigConfig",
    "Skeleton",
    "StillLayer",
    "animate",
    "auto_skeleton",
    "background_plate",
    "bone_angles",
    "build_character",
    "build_mesh",
    "build_rig",
    "default_frames",
    "draw_rig",
    "fk_from_angles",
    "joint_sequences",
    "load_bvh",
    "mask_support",
    "match_people",
    "parse_bvh",
    "parse_handles",
    "parse_keyframes",
    "parse_pose_keypoint",
    "pose_tracks",
    "project_bvh",
    "render_frames",
    "skeleton_from_points",
]
