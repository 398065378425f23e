"""ComfyUI nodes: instance-aware 3D Ken Burns (camera path + renderer).

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943) §6.1, Fig. 7, on top of the
3D Ken Burns effect (Niklaus et al. 2019). Characters are depth layers in front of an inpainted background plate,
so disocclusions reveal background instead of smeared characters. The work is done by ``cartoonseg.kenburns`` (pure
PyTorch, CPU or GPU).

Inputs follow the pack's conventions: depth is an IMAGE ``[B,H,W,3]`` grey in [0,1], **larger = nearer** (as from
``CartoonSegDepthEstimate``/``CartoonSegDepthPool`` or any ComfyUI depth preprocessor), resized to the image when
sizes differ; instances are ``CARTOONSEG_INSTANCES`` (one ``cartoonseg.Instances`` per frame, segmented from the
image: instances of another size are refused, not stretched); the background plate
is an IMAGE (e.g. ``CartoonSegInpaintPatchMatch`` over ``CartoonSegBackgroundMask``). Output frames are an IMAGE
batch for any video saver (core SaveAnimatedWEBP / SaveAnimatedPNG, or Video Helper Suite), with the fps as FLOAT.
"""

from __future__ import annotations

import torch

from cartoonseg.inpaint.diffusion import NEGATIVE_PROMPT, PROMPT_SUFFIX
from cartoonseg.kenburns.camera import ANCHORS, EASINGS, PRESETS
from cartoonseg.kenburns.disocclusion import CHARACTER_REVEALS, FILLS
from cartoonseg.kenburns.render import KenBurnsConfig

from . import _comfy
from ._comfy import DEVICES
from .inpaint import TAGS_TOOLTIP

CATEGORY = f"{_comfy.CATEGORY}/kenburns"


class CartoonSegCameraPath:
    """The virtual camera of a Ken Burns clip: preset motion, easing, length, playback and fps."""

    DESCRIPTION = (
        "Camera motion for 3D Ken Burns. auto: the original's path (centre 0.97 crop, zoom x1.25 towards the "
        "end crop that reveals the fewest holes, nearest point anchored). Presets: zoom, pan, dolly zoom (vertigo) "
        "and orbit, with easing. playback appends the reversed clip (ping-pong, 75 -> 148 frames)."
    )
    RETURN_TYPES = ("CARTOONSEG_CAMERA",)
    RETURN_NAMES = ("camera",)
    OUTPUT_TOOLTIPS = ("the camera motion, for 3D Ken Burns",)
    FUNCTION = "make"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": (list(PRESETS), {"default": "auto",
                                           "tooltip": "auto = the original's zoom towards the least-revealing crop; "
                                                      "or a zoom, pan, dolly zoom or orbit"}),
                "frames": ("INT", {"default": 75, "min": 1, "max": 10000, "tooltip": "rendered time steps"}),
                "zoom": ("FLOAT", {"default": 1.25, "min": 1.0, "max": 8.0, "step": 0.01,
                                   "tooltip": "zoom of the move (auto/zoom), crop zoom (pan/orbit), focal ratio (dolly)"}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                       "tooltip": "share of the margin used by pans/orbit; multiplier of zoom - 1"}),
                "easing": (list(EASINGS), {"default": "linear", "tooltip": "speed profile of the move"}),
                "playback": ("BOOLEAN", {"default": True, "tooltip": "append the reversed clip (ping-pong)"}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 1.0,
                                  "tooltip": "frames per second of the clip"}),
                "anchor": (list(ANCHORS), {"default": "nearest",
                                           "tooltip": "depth that moves like a 2-D crop (nearest: nothing off-image)"}),
            }
        }

    def make(self, preset="auto", frames=75, zoom=1.25, strength=1.0, easing="linear", playback=True, fps=25.0,
             anchor="nearest"):
        from cartoonseg.kenburns import CameraPath

        return (CameraPath(preset=preset, frames=int(frames), zoom=float(zoom), strength=float(strength),
                           easing=easing, playback=bool(playback), fps=float(fps), anchor=anchor),)


class CartoonSegKenBurns:
    """Render an instance-aware 3D Ken Burns clip from each input image."""

    DESCRIPTION = (
        "Parallax video from one image: depth (IMAGE, larger = nearer) becomes a point cloud seen by a moving camera; "
        "instances are depth layers in front of the background plate, so revealed regions show background, never "
        "smeared characters (inpainted at the path's end views; character_reveals = plate shows the wired plate "
        "instead). fill: what the camera uncovers at depth edges is inpainted once at the path's end views "
        "and stays put as the camera moves (patchmatch, the default; diffusion with a CartoonSegDiffusionFill wired "
        "in), or smeared from the farther side per frame (far-side, fastest). Outputs the frames (an IMAGE batch for "
        "SaveAnimatedWEBP, Video Combine or core Create Video), a MASK of pixels that were not visible in the input, "
        "and the fps. Several input images give their clips one after another. size: long side of the frames "
        "(0 = input size; the original renders at 1024)."
    )
    RETURN_TYPES = ("IMAGE", "MASK", "FLOAT")
    RETURN_NAMES = ("frames", "disocclusion", "fps")
    OUTPUT_TOOLTIPS = ("the clip's frames, for Save Animated WEBP / Video Combine",
                       "pixels of each frame that were hidden in the input (filled)",
                       "the camera's fps, for the video saver")
    FUNCTION = "render"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "the picture(s) to animate"}),
                "depth": ("IMAGE", {"tooltip": "grey depth map, larger = nearer"}),
                "size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                 "tooltip": "long side of the frames; 0 = input size"}),
                "depth_of_field": ("BOOLEAN", {"default": False,
                                               "tooltip": "rack focus to the nearest character, from the far end "
                                                          "(from the near end when it stands in the farther half)"}),
                "dof_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                           "tooltip": "blur strength of the depth of field"}),
                "dof_speed": ("FLOAT", {"default": 50.0, "min": 0.0, "max": 1000.0, "step": 1.0,
                                        "tooltip": "steepness of the mid-clip focus ramp (the original: 50)"}),
                "min_disparity": ("FLOAT", {"default": 0.02, "min": 0.0001, "max": 1.0, "step": 0.005,
                                            "tooltip": "depth-map floor: the farthest point is at most 1/x times "
                                                       "farther than the nearest"}),
                "device": (list(DEVICES), {"default": "auto",
                                           "tooltip": "auto = ComfyUI's device (the GPU if there is one)"}),
                "fill": (list(FILLS), {"default": "patchmatch",
                                       "tooltip": "regions the camera uncovers: patchmatch = inpainted at the path's "
                                                  "end views (no model), diffusion = the same, then repainted by the "
                                                  "wired diffusion fill, far-side = per-frame smear (fastest)"}),
            },
            "optional": {
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "characters as depth layers (from Segment or "
                                                                  "Pool Instance Depth; after Alpha Mattes the "
                                                                  "layers' alpha is the matte)"}),
                "background": ("IMAGE", {"tooltip": "inpainted background plate (characters removed) of the image's "
                                                    "aspect ratio, any size (another aspect is refused, never "
                                                    "stretched); without it the characters' area is inpainted here "
                                                    "(fill patchmatch/diffusion)"}),
                "camera": ("CARTOONSEG_CAMERA", {"tooltip": "from Ken Burns Camera (default: auto, 75 frames)"}),
                "diffusion": ("CARTOONSEG_DIFFUSION_FILL", {"tooltip": "the model for fill = diffusion "
                                                                       "(Ken Burns Diffusion Fill)"}),
                "character_reveals": (list(CHARACTER_REVEALS), {
                    "default": "key-views",
                    "tooltip": "background the camera reveals behind the characters: key-views = inpainted at the "
                               "end views like every other disocclusion (better than a PatchMatch plate), plate = "
                               "the background plate as wired (use it with a real, drawn background)"}),
                "depth_refine": ("BOOLEAN", {
                    "default": KenBurnsConfig.depth_refine,
                    "tooltip": "sharpen the depth edges a depth estimator blurs (Depth Anything and the like): each "
                               "blurred step is snapped to its near or far side by colour, so a moving camera opens "
                               "a hole there instead of a smeared skin; a sharp (exact, drawn) depth and slanted "
                               "grounds are left as they are"}),
            },
        }

    def render(self, image, depth, size=0, depth_of_field=False, dof_strength=1.0, dof_speed=50.0, min_disparity=0.02,
               device="auto", fill="patchmatch", instances=None, background=None, camera=None, diffusion=None,
               character_reveals="key-views", depth_refine=None):
        from cartoonseg.kenburns import CameraPath, render_kenburns

        if fill == "diffusion" and diffusion is None:
            raise ValueError("fill 'diffusion' needs a model: wire a CartoonSegDiffusionFill into 'diffusion' (or use "
                             "fill 'patchmatch', which needs none)")
        image = _comfy.check_image(image)
        depth = _comfy.check_image(depth, "depth")
        frames = None
        if instances is not None:  # one clip per image/instances pair, checked before any clip is rendered
            image, frames = _comfy.frames_instances(image, instances)
        background = _comfy.check_image(background, "background") if background is not None else None
        camera = _check_camera(camera, CameraPath)
        n = image.shape[0]
        _comfy.check_batches(n, depth=len(depth), background=len(background) if background is not None else None)
        refine = KenBurnsConfig.depth_refine if depth_refine is None else bool(depth_refine)  # None: an old workflow
        config = KenBurnsConfig(size=int(size), depth_of_field=bool(depth_of_field), dof_strength=float(dof_strength),
                                dof_speed=float(dof_speed), min_disparity=float(min_disparity), fill=fill,
                                character_reveals=character_reveals, depth_refine=refine)
        dev = _comfy.resolve_device(device)  # the device asked for, or a ValueError naming it (never a quiet CPU)
        clips, masks = [], []
        with _comfy.steps(n * camera.frames) as bar:
            for b in range(n):
                progress = _Progress(bar)
                clip = render_kenburns(
                    image[b], _comfy.pick(depth, b), masks=_comfy.pick(frames, b) if frames else None,
                    background=_comfy.pick(background, b) if background is not None else None,
                    camera=camera, config=config, device=dev, callback=progress, refiner=diffusion,
                    interrupt=_comfy.throw_if_interrupted, key_view_progress=bar.subtask(),  # key views join the bar
                )
                clips.append(clip.frames.float().cpu())
                masks.append(clip.disocclusion.float().cpu())
        if dev.type != "cpu":
            _comfy.soft_empty_cache()
        return (torch.cat(clips), torch.cat(masks), float(camera.fps))


class CartoonSegDiffusionFill:
    """The diffusion model of the Ken Burns node's ``fill = diffusion`` (ComfyUI sampling)."""

    DESCRIPTION = (
        "Diffusion inpainting for 3D Ken Burns (fill = diffusion), as the paper's Ken Burns pipeline: the holes "
        "the camera uncovers are first filled by depth-aware PatchMatch at the path's end views, then re-sampled with "
        "your SD checkpoint from that fill (denoise 0.75, DPM++ 2M Karras, 32 steps, cfg 7, seed 0). Prompt: "
        f"'<tags>, {PROMPT_SUFFIX}' (wire the background tags of Tag Instances into 'tags'); "
        "negative prompt: the paper's, against people, so no character appears in a hole. Inpainting checkpoints "
        "also get the masked-image latent. A missing background plate is refined the same way."
    )
    RETURN_TYPES = ("CARTOONSEG_DIFFUSION_FILL",)
    RETURN_NAMES = ("diffusion",)
    OUTPUT_TOOLTIPS = ("the diffusion pass, for 3D Ken Burns' 'diffusion' input (fill = diffusion)",)
    FUNCTION = "make"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_comfy.checkpoint_inputs(),
                "tags": ("STRING", {"default": "", "multiline": True,
                                    "tooltip": TAGS_TOOLTIP}),
                "negative_prompt": ("STRING", {"default": NEGATIVE_PROMPT, "multiline": True,
                                               "tooltip": "the paper's fixed negative prompt: keeps people out of "
                                                          "the holes"}),
                **_comfy.sampler_inputs("the PatchMatch fill", "the frames' own"),
            }
        }

    def make(self, model, clip, vae, tags="", negative_prompt=NEGATIVE_PROMPT, seed=0, steps=32, cfg=7.0, denoise=0.75,
             sampler_name="dpmpp_2m", scheduler="karras", short_side=1024):
        from cartoonseg.inpaint import RefineSettings
        from cartoonseg.kenburns import make_refiner

        from .inpaint import ComfyInpaintBackend

        settings = RefineSettings(steps=steps, cfg=cfg, denoise=denoise, seed=seed, sampler=sampler_name,
                                  scheduler=scheduler, short_side=short_side)
        refiner = make_refiner(ComfyInpaintBackend(model, clip, vae), tags=tags, negative_prompt=negative_prompt,
                               settings=settings, interrupt=_comfy.throw_if_interrupted)
        refiner.backend.encode(refiner.prompt), refiner.backend.encode(negative_prompt)  # once, as CLIPTextEncode
        return (refiner,)


class _Progress:
    """``render_kenburns`` callback: advances the ComfyUI bar by the frames done (each tick checks Cancel)."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        for _ in range(done - self.done):
            self.bar.tick()
        self.done = done


def _check_camera(camera, camera_cls):
    if camera is None:
        return camera_cls()
    if not isinstance(camera, camera_cls):
        raise TypeError(f"camera must be a CARTOONSEG_CAMERA from Ken Burns Camera, got {type(camera).__name__}")
    return camera


NODE_CLASS_MAPPINGS = {
    "CartoonSegCameraPath": CartoonSegCameraPath,
    "CartoonSegKenBurns": CartoonSegKenBurns,
    "CartoonSegDiffusionFill": CartoonSegDiffusionFill,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CartoonSegCameraPath": "Ken Burns Camera (CartoonSeg)",
    "CartoonSegKenBurns": "3D Ken Burns (CartoonSeg)",
    "CartoonSegDiffusionFill": "Ken Burns Diffusion Fill (CartoonSeg)",
}
