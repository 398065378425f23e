"""ComfyUI node: instance-aware style editing (paper §6.2, "Instance-guided Cartoon Editing with a Large-scale
Dataset", arXiv 2312.01943).

``CartoonSegInstanceStyleEdit`` restyles every character separately with "global style prompt + its own tags",
the background as one more instance, all with the same seed, under a lineart/canny ControlNet, and pastes the
results back through the soft instance masks, back to front. It samples inside the node with ComfyUI's own
sampling API (the calls of CLIPTextEncode / ControlNetApplyAdvanced / VAEEncode / KSampler / VAEDecode, via
``_comfy``), the way Impact's detailers do. The loop, crops, prompts, ordering and compositing are
``cartoonseg.style.style_edit_batch``; this module only adapts ComfyUI objects to it.
"""

from __future__ import annotations


import torch

from cartoonseg.style.config import (BACKGROUND_FILLS, DEFAULT_NEGATIVE, DEFAULT_PRESET, MODES, PRESETS, StyleConfig,
                                     style_preset)
from cartoonseg.style.editor import SampleRequest, count_passes, style_edit_batch
from cartoonseg.style.hints import HINT_TYPES, extract_hint
from cartoonseg.style.regions import ORDERS
from cartoonseg.transforms import resize_center_crop

from . import _comfy

CATEGORY = f"{_comfy.CATEGORY}/style"


class ComfyStyleBackend:
    """A :data:`cartoonseg.style.editor.Backend` over ComfyUI MODEL / CLIP / VAE (/ CONTROL_NET).

    Text conditionings are encoded once per distinct prompt. ``calls`` counts the sampler calls; ``on_step`` runs
    after every sampler step (the node's progress bar).
    """

    def __init__(self, model, clip, vae, config: StyleConfig, control_net=None, on_step=None) -> None:
        self.model, self.clip, self.vae, self.control_net, self.config = model, clip, vae, control_net, config
        self.encode = _comfy.TextEncoder(clip)
        self.calls = 0
        self.on_step = on_step

    def __call__(self, req: SampleRequest) -> torch.Tensor:
        cfg = self.config
        positive, negative = self.encode(req.prompt), self.encode(req.negative)
        if self.control_net is not None and req.hint is not None:
            positive, negative = _comfy.apply_control_net(
                positive, negative, self.control_net, req.hint, cfg.control_strength, self.vae
            )
        self.calls += 1
        return _comfy.img2img(
            self.model, self.vae, positive, negative, req.image, seed=req.seed, steps=cfg.steps, cfg=cfg.cfg,
            sampler_name=cfg.sampler, scheduler=cfg.scheduler, denoise=cfg.denoise, noise_mask=req.mask,
            on_step=self.on_step,
        )


def format_passes(records) -> str:
    """One line per pass: ``frame F iter K instance I (seed S): prompt``."""
    lines = []
    for r in records:
        who = "background" if r.kind == "background" else ("whole image" if r.kind == "global" else f"instance {r.index}")
        lines.append(f"frame {r.frame} iter {r.iteration} {who} (seed {r.seed}): {r.prompt}")
    return "\n".join(lines)


class CartoonSegInstanceStyleEdit:
    """Instance-aware style editing inside one node (see the module docstring)."""

    DESCRIPTION = (
        "Restyle each character with 'style prompt + its own tags' and the background as one more instance, same "
        "seed for all, lineart/canny ControlNet (paper §6.2). The background is pasted through the binary union of "
        "the masks (after Alpha Mattes: under the mattes), the characters through their feathered soft masks, "
        "back to front. mode=global is the single-prompt baseline."
    )
    CATEGORY = CATEGORY
    FUNCTION = "edit"
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "hint", "prompts")
    OUTPUT_TOOLTIPS = (
        "the restyled frames",
        "the ControlNet hint of the whole frame (given or extracted), for checking",
        "one line per sampling pass with its prompt and seed",
    )

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = _comfy.sampler_choices()
        d = style_preset(DEFAULT_PRESET)  # the paper's SD1.5 settings, as the CLI's default --preset
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "SD model that paints the new style"}),
                "clip": ("CLIP", {"tooltip": "the checkpoint's CLIP, encodes the prompts"}),
                "vae": ("VAE", {"tooltip": "the checkpoint's VAE"}),
                "image": ("IMAGE", {"tooltip": "image or frames to restyle"}),
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "from Segment; tags/prompts from Tag Instances / "
                                                                  "Merge Prompts; after Alpha Mattes the background "
                                                                  "is composited under the mattes"}),
                "style_prompt": ("STRING", {"default": "3D pixar style", "multiline": True,
                                            "tooltip": "global target style, put before every instance's tags"}),
                "negative_prompt": ("STRING", {"default": DEFAULT_NEGATIVE, "multiline": True,
                                               "tooltip": "negative prompt of every pass"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                 "tooltip": "the same seed for every instance and the background"}),
                "steps": ("INT", {"default": d.steps, "min": 1, "max": 1000, "tooltip": "sampler steps per pass"}),
                "cfg": ("FLOAT", {"default": d.cfg, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": f"classifier-free guidance scale ({d.cfg:g}: the paper's "
                                             f"SD1.5 script; {PRESETS['sdxl_canny'].cfg:g}: the authors' SDXL run)"}),
                "sampler_name": (samplers, {"default": d.sampler if d.sampler in samplers else samplers[0],
                                            "tooltip": "sampler"}),
                "scheduler": (schedulers, {"default": d.scheduler if d.scheduler in schedulers else schedulers[0],
                                           "tooltip": "noise schedule"}),
                "denoise": ("FLOAT", {"default": d.denoise, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "how far each crop may move from the original (img2img strength)"}),
                "mode": (list(MODES), {"default": d.mode,
                                       "tooltip": "instance = paper method; global = one img2img with the style prompt only (baseline)"}),
                "background_as_instance": ("BOOLEAN", {"default": d.background_as_instance,
                                                       "tooltip": "restyle the background as one more instance "
                                                                  "(the paper); off = keep it"}),
                "iterations": ("INT", {"default": d.iterations, "min": 1, "max": 10,
                                       "tooltip": "rounds over all instances; round k uses seed + k(k+1)/2"}),
                "crop_padding": ("INT", {"default": d.crop_padding, "min": 0, "max": 1024, "tooltip": "context px around each instance"}),
                "mask_feather": ("INT", {"default": int(d.mask_feather), "min": 0, "max": 256,
                                         "tooltip": "outward feather of the paste-back (Gaussian std, px)"}),
                "resolution": ("INT", {"default": d.resolution, "min": 0, "max": 4096, "step": 8,
                                       "tooltip": "long side each crop is sampled at (SD1.5: 512-768, SDXL: 1024); 0 = native"}),
                "control_strength": ("FLOAT", {"default": d.control_strength, "min": 0.0, "max": 10.0, "step": 0.01,
                                               "tooltip": "ControlNet strength (0 = no ControlNet)"}),
                "hint_type": ([*HINT_TYPES, "none"], {"default": d.hint,
                                                     "tooltip": "built-in hint when no control_hint image is connected"}),
                "masked_denoise": ("BOOLEAN", {"default": d.masked_denoise,
                                               "tooltip": "denoise only inside the instance mask (inpaint only-masked)"}),
                "background_fill": (list(BACKGROUND_FILLS), {"default": d.background_fill,
                                                             "tooltip": "remove characters before the background pass (when no background image)"}),
                "order": (list(ORDERS), {"default": d.order, "tooltip": (
                    "auto = touching instances as the picture layers them (where masks overlap the more confident "
                    "one, else the one whose outline runs on unbroken is in front), else by extras depth when known, else lower box bottom = nearer; "
                    "depth/bottom/index = that rule alone")}),
                "background_prompt": ("STRING", {"default": "", "tooltip": "extra text for the background pass"}),
            },
            "optional": {
                "control_net": ("CONTROL_NET", {"tooltip": "e.g. control_v11p_sd15s2_lineart_anime (SD1.5) or a canny SDXL ControlNet"}),
                "control_hint": ("IMAGE", {"tooltip": "hint from a preprocessor (white lines on black); else built-in. "
                                                      "Another size is resized; another aspect ratio is centre-cropped "
                                                      "first, as ComfyUI's ControlNet does"}),
                "background": ("IMAGE", {"tooltip": "inpainted clean plate for the background pass (the image's "
                                                        "aspect ratio, any size; another aspect is refused, never "
                                                        "stretched)"}),
            },
        }

    def edit(self, model, clip, vae, image, instances, style_prompt, negative_prompt, seed, steps, cfg,
             sampler_name, scheduler, denoise, mode, background_as_instance, iterations, crop_padding,
             mask_feather, resolution, control_strength, hint_type, masked_denoise, background_fill, order,
             background_prompt="", control_net=None, control_hint=None, background=None):
        image = _comfy.check_image(image)
        image, frames = _comfy.frames_instances(image, instances)  # one output frame per image/instances pair
        b, h, w, _ = image.shape
        config = StyleConfig(
            style_prompt=style_prompt, negative_prompt=negative_prompt, background_prompt=background_prompt,
            mode=mode, background_as_instance=bool(background_as_instance), background_fill=background_fill,
            seed=int(seed), steps=int(steps), cfg=float(cfg), sampler=sampler_name, scheduler=scheduler,
            denoise=float(denoise), control_strength=float(control_strength), hint=hint_type,
            crop_padding=int(crop_padding), mask_feather=float(mask_feather), resolution=int(resolution),
            masked_denoise=bool(masked_denoise), iterations=int(iterations), order=order,
        )
        hints = _comfy.check_image(control_hint, "control_hint") if control_hint is not None else None
        plates = _comfy.check_image(background, "background") if background is not None else None
        _comfy.check_batches(b, control_hint=hints.shape[0] if hints is not None else None,
                             background=plates.shape[0] if plates is not None else None)
        passes = sum(count_passes(inst, config) for inst in frames)
        with _comfy.steps(max(passes * config.steps, 1)) as bar:  # one unit per sampler step of every pass
            backend = ComfyStyleBackend(model, clip, vae, config, control_net, on_step=bar.tick)
            out, records = style_edit_batch(
                image, frames, backend, config, backgrounds=plates, hint_images=hints,
                use_control=control_net is not None and control_strength > 0, interrupt=_comfy.throw_if_interrupted,
            )
        if hints is not None:
            preview = hints if hints.shape[0] == b else hints[:1].expand(b, -1, -1, -1)
            preview = resize_center_crop(preview, (h, w))  # what the editor used: centre-cropped, as ComfyUI's ControlNet
        elif hint_type != "none":
            preview = extract_hint(image, hint_type)
        else:
            preview = torch.zeros_like(image)
        return (out.contiguous(), preview.contiguous().clamp(0, 1), format_passes(records))


NODE_CLASS_MAPPINGS = {"CartoonSegInstanceStyleEdit": CartoonSegInstanceStyleEdit}
NODE_DISPLAY_NAME_MAPPINGS = {"CartoonSegInstanceStyleEdit": "Instance Style Edit (CartoonSeg)"}
