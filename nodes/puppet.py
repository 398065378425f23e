"""ComfyUI nodes: puppet animation of the characters of one picture (arXiv 2312.01943 §6.3).

``CartoonSegPuppetRig`` turns each instance into a mesh rigged to a skeleton (from a ``POSE_KEYPOINT`` input such
as DWPose's, from handles JSON, or automatic from the mask) and shows mesh and skeleton as a preview.
``CartoonSegPuppetAnimate`` drives the rig with a preset, a ``POSE_KEYPOINT`` sequence (retargeted by bone angles)
or keyframed handles, deforms every character as-rigid-as-possible and composites them over the background plate
(an IMAGE such as ``CartoonSegInpaintPatchMatch`` over ``CartoonSegBackgroundMask``; PatchMatch runs here when none
is given). Frames are an IMAGE batch for SaveAnimatedWEBP / video nodes, plus a MASK of the characters per frame.
The work is done by ``cartoonseg.puppet``.
"""

from __future__ import annotations

import torch

from cartoonseg.puppet.motion import PRESETS, RETARGET_MODES as RETARGET

from . import _comfy

CATEGORY = f"{_comfy.CATEGORY}/puppet"


def _pose_frames(pose_keypoint):
    """POSE_KEYPOINT as a list of frame dicts (a single dict is one frame)."""
    if pose_keypoint is None:
        return None
    if isinstance(pose_keypoint, dict):
        return [pose_keypoint]
    if isinstance(pose_keypoint, (list, tuple)) and not pose_keypoint:
        raise ValueError("pose_keypoint is an empty POSE_KEYPOINT list: the pose node found no frames (give at least "
                         "one frame dict, or disconnect it)")
    if not isinstance(pose_keypoint, (list, tuple)):
        raise TypeError(f"pose_keypoint must be a POSE_KEYPOINT list of frame dicts, got {type(pose_keypoint).__name__}")
    return list(pose_keypoint)


class CartoonSegPuppetRig:
    """Rig every character instance for puppet animation (mesh + skeleton + factorised ARAP system)."""

    DESCRIPTION = (
        "Makes each character a puppet: a triangle mesh that follows its (soft) mask, bound to a skeleton from the "
        "optional POSE_KEYPOINT (OpenPose/DWPose layout; people are matched to instances by containment), from "
        "handles_json, or else derived from the mask's distance transform (head, arms and legs found by direction). "
        "The as-rigid-as-possible system is factorised here once, so animating is cheap. Preview: meshes in colour, "
        "bones in white. One rig per input image."
    )
    RETURN_TYPES = ("CARTOONSEG_PUPPET", "IMAGE")
    RETURN_NAMES = ("puppet", "preview")
    OUTPUT_TOOLTIPS = ("the rigged characters, for Puppet Animate", "meshes in colour and bones in white")
    FUNCTION = "rig"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "the picture the instances belong to (for the preview)"}),
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "characters to rig (from Segment; after Alpha "
                                                                  "Mattes they are cut out by their mattes)"}),
                "indices": ("STRING", {"default": "all",
                                       "tooltip": "instances to animate: 'all' or e.g. '0,2' / '1-3'; others stay still"}),
                "mesh_spacing": ("INT", {"default": 0, "min": 0, "max": 256,
                                         "tooltip": "pixels between mesh samples; 0 = automatic (about 300 per character)"}),
            },
            "optional": {
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "OpenPose/DWPose keypoints of this picture (one entry, "
                                                               "or one per picture): rig from their joints"}),
                "handles_json": ("STRING", {"default": "", "multiline": True,
                                            "tooltip": '{"characters": [{"instance": 0, "joints": {"neck": [x, y], '
                                                       '...}}]}; wins over pose_keypoint'}),
            },
        }

    def rig(self, image, instances, indices="all", mesh_spacing=0, pose_keypoint=None, handles_json=""):
        from cartoonseg.puppet import MeshConfig, RigConfig, build_rig, draw_rig

        from cartoonseg.ops import parse_indices

        image, frames = _comfy.frames_instances(_comfy.check_image(image), instances)  # one rig per pair
        poses = _pose_frames(pose_keypoint)
        # one entry for all pictures or one per picture: a driving sequence wired here by mistake is refused, not
        # silently cut to its first poses
        _comfy.check_batches(image.shape[0], pose_keypoint=len(poses) if poses else None)
        config = RigConfig(mesh=MeshConfig(spacing=float(mesh_spacing)))
        select = parse_indices(indices)
        handles = handles_json if handles_json and handles_json.strip() else None
        rigs, previews = [], []
        with _comfy.steps(image.shape[0]) as bar:
            for b in range(image.shape[0]):
                rig = build_rig(frames[b], poses=_comfy.pick(poses, b) if poses else None, handles=handles, select=select,
                                config=config, callback=lambda done, total: _comfy.throw_if_interrupted())
                rigs.append(rig)
                previews.append(torch.from_numpy(draw_rig(_comfy.image_to_uint8(image[b]), rig)).float() / 255.0)
                bar.tick()
        return (rigs, torch.stack(previews))


class CartoonSegPuppetAnimate:
    """Animate a rigged picture: preset, POSE_KEYPOINT sequence or keyframes -> frames + per-frame character masks."""

    DESCRIPTION = (
        "Deforms every rigged character as-rigid-as-possible and composites them back to front (as the input shows "
        "them where they touch, else pooled depth when known, else the ground-contact rule) over the background plate, so wherever a character moved away (by "
        "1.5 px or more; a sub-pixel wobble keeps the input) the plate shows; instances not rigged stay still in "
        "that order, hiding characters that move behind them. "
        "Motion: pose_keypoint (a sequence, e.g. DWPose on a driving video, retargeted by bone angles keeping each "
        "character's bone lengths) if connected, else keyframes_json if given, else the preset "
        "(idle-sway, wave, bounce, breathe, nod; they start at the rest pose and loop). frames 0 = the motion's own "
        "length. Without a plate, PatchMatch (7x7 patches) removes the characters first. Frame 0 of a preset is "
        "the input picture."
    )
    RETURN_TYPES = ("IMAGE", "MASK", "FLOAT")
    RETURN_NAMES = ("frames", "masks", "fps")
    OUTPUT_TOOLTIPS = ("the animation's frames, for Save Animated WEBP / Video Combine",
                       "the characters' masks in every frame", "frames per second, for the video saver")
    FUNCTION = "animate"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "the rigged picture"}),
                "puppet": ("CARTOONSEG_PUPPET", {"tooltip": "rig from Puppet Rig"}),
                "preset": (list(PRESETS), {"default": "idle-sway", "tooltip": "procedural motion when no pose "
                                                                             "sequence or keyframes are given"}),
                "frames": ("INT", {"default": 0, "min": 0, "max": 10000,
                                   "tooltip": "frames to render; 0 = the motion's natural length"}),
                "fps": ("FLOAT", {"default": 12.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                  "tooltip": "frames per second (also sets how fast presets and BVH play)"}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05,
                                       "tooltip": "amplitude of the preset"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF,
                                 "tooltip": "varies the preset's amplitude and direction per character (0 = same)"}),
                "retarget": (list(RETARGET), {"default": "absolute",
                                              "tooltip": "pose sequences: copy bone directions (absolute) or their "
                                                         "changes since the first frame (relative)"}),
            },
            "optional": {
                "plate": ("IMAGE", {"tooltip": "background without the characters (PatchMatch or diffusion "
                                                    "inpainting) of the image's aspect ratio, any size (another "
                                                    "aspect is refused, never stretched); absent: "
                                                    "PatchMatch with 7x7 patches"}),
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "driving pose sequence, one entry per frame"}),
                "keyframes_json": ("STRING", {"default": "", "multiline": True,
                                              "tooltip": '{"keyframes": [{"frame": 12, "joints": {"0": {"r_wrist": '
                                                         '[x, y]}}}]}'}),
            },
        }

    def animate(self, image, puppet, preset="idle-sway", frames=0, fps=12.0, strength=1.0, seed=0, retarget="absolute",
                plate=None, pose_keypoint=None, keyframes_json=""):
        from cartoonseg.puppet import (
            KeyframeMotion,
            PresetMotion,
            RetargetMotion,
            background_plate,
            default_frames,
            render_frames,
        )

        image = _comfy.check_image(image)
        rigs = _check_rigs(puppet, image.shape[0])
        plate = _comfy.check_image(plate, "plate") if plate is not None else None
        if plate is not None and plate.shape[0] not in (1, image.shape[0]):
            raise ValueError(f"plate has {plate.shape[0]} frames but image has {image.shape[0]}")
        h, w = image.shape[1:3]
        if pose_keypoint is not None:
            motion = RetargetMotion.from_pose_keypoint(_pose_frames(pose_keypoint), canvas=(h, w), mode=retarget)
        elif keyframes_json and keyframes_json.strip():
            motion = KeyframeMotion.from_json(keyframes_json)
        else:
            motion = PresetMotion(preset, strength=float(strength), seed=int(seed))
        n = int(frames) or default_frames(motion, float(fps))
        out_f, out_m = [], []
        with _comfy.steps(image.shape[0] * n) as bar:
            for b in range(image.shape[0]):
                rig = _comfy.pick(rigs, b)
                bg = _comfy.pick(plate, b) if plate is not None else background_plate(
                    image[b], rig, interrupt=_comfy.throw_if_interrupted)
                for frame, mask in render_frames(image[b], rig, motion, frames=n, fps=float(fps), plate=bg,
                                                 callback=lambda done, total: bar.tick()):
                    out_f.append(torch.from_numpy(frame))
                    out_m.append(torch.from_numpy(mask))
        return (torch.stack(out_f), torch.stack(out_m), float(fps))


def _check_rigs(puppet, n_images: int) -> list:
    from cartoonseg.puppet import PuppetRig

    rigs = [puppet] if isinstance(puppet, PuppetRig) else puppet
    if not isinstance(rigs, (list, tuple)) or not rigs or not all(isinstance(r, PuppetRig) for r in rigs):
        raise TypeError(f"puppet must be a CARTOONSEG_PUPPET from CartoonSegPuppetRig, got {type(puppet).__name__}")
    if len(rigs) not in (1, n_images):
        raise ValueError(f"puppet has {len(rigs)} rigs but image has {n_images} frames")
    return list(rigs)


NODE_CLASS_MAPPINGS = {
    "CartoonSegPuppetRig": CartoonSegPuppetRig,
    "CartoonSegPuppetAnimate": CartoonSegPuppetAnimate,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CartoonSegPuppetRig": "Puppet Rig (CartoonSeg)",
    "CartoonSegPuppetAnimate": "Puppet Animate (CartoonSeg)",
}
