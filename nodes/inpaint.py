"""ComfyUI nodes: background mask, PatchMatch/Telea inpainting, and diffusion refinement of the background plate.

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943) §6.1: characters are removed
with PatchMatch (patch size 3), then a latent-diffusion inpainting pass (the background's tags as prompt, a fixed
negative prompt, DPM++ 2M Karras, 32 steps, cfg 7, denoise 0.75, seed 0) re-synthesises only the hole. The diffusion
node samples with the user's MODEL / CLIP / VAE through ComfyUI's own sampler (``nodes/_comfy.py``), the way the
Impact Pack detailers do; the rest is ``cartoonseg.inpaint`` and ``cartoonseg.diffusion_inpaint``.

MASK convention: 1 = fill (the characters to remove). Pixels where the mask is 0 are returned unchanged.
"""

from __future__ import annotations

import torch

from . import _comfy

CATEGORY = f"{_comfy.CATEGORY}/inpaint"
METHODS = ("patchmatch", "telea")
INIT_FILLS = ("patchmatch", "telea", "image")
NEGATIVE_PROMPT = "human, single, person, girl, 1girl, boy, 1boy, creature, animal, alien, robot, body"


def _frame_mask(mask: torch.Tensor, b: int, size: tuple[int, int]) -> torch.Tensor:
    m = mask[min(b, mask.shape[0] - 1)]
    if tuple(m.shape) != tuple(size):
        m = torch.nn.functional.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return m.clamp(0, 1)


def _check_batches(image: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"mask has {mask.shape[0]} frames but image has {image.shape[0]}; use 1 mask or one per frame")


class CartoonSegBackgroundMask:
    """Union of the chosen instances' masks, dilated and feathered: the region to inpaint to remove them."""

    DESCRIPTION = (
        "MASK (1 = fill) covering the chosen instances: their union, grown by `dilate` pixels (the original used "
        "5 for diffusion inpainting) and optionally feathered outward. indices: 'all' or e.g. '0,2' / '1-3'."
    )
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    FUNCTION = "make"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instances": ("CARTOONSEG_INSTANCES",),
                "indices": ("STRING", {"default": "all"}),
                "dilate": ("INT", {"default": 5, "min": 0, "max": 256}),
                "feather": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 64.0, "step": 0.5}),
            }
        }

    def make(self, instances, indices="all", dilate=5, feather=0.0):
        from cartoonseg.inpaint import background_mask

        from .instances import parse_indices
        from .segment import check_instances_list

        frames = check_instances_list(instances)
        chosen = parse_indices(indices)
        masks = [background_mask(f, indices=chosen, dilate=dilate, feather=feather) for f in frames]
        sizes = {tuple(m.shape) for m in masks}
        if len(sizes) != 1:
            raise ValueError(f"frames have different sizes {sorted(sizes)}; cannot batch the MASK")
        return (torch.stack(masks),)


class CartoonSegInpaintPatchMatch:
    """Remove the masked region with PatchMatch (patch 3, multi-scale texture synthesis) or OpenCV Telea (fast)."""

    DESCRIPTION = (
        "Fills the masked region (1 = fill) from the rest of the image. patchmatch: multi-scale PatchMatch with "
        "texture (patch size 3 as the original); telea: OpenCV fast marching, quick but smooth. Unmasked pixels "
        "are unchanged. The result is a clean background plate, e.g. for tagging or as diffusion init."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "inpaint"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "mask": ("MASK",),
                "method": (list(METHODS), {"default": "patchmatch"}),
                "patch_size": ("INT", {"default": 3, "min": 3, "max": 15, "step": 2}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF}),
                "telea_radius": ("INT", {"default": 3, "min": 1, "max": 64}),
            }
        }

    def inpaint(self, image, mask, method="patchmatch", patch_size=3, seed=0, telea_radius=3):
        from cartoonseg.inpaint import inpaint

        image = _comfy.check_image(image)
        mask = _comfy.check_mask(mask)
        _check_batches(image, mask)
        out = []
        with _comfy.steps(image.shape[0]) as bar:
            for b in range(image.shape[0]):
                m = _frame_mask(mask, b, tuple(image.shape[1:3]))
                out.append(inpaint(image[b], m > 0.5, method=method, patch_size=patch_size, seed=seed, radius=telea_radius,
                                   interrupt=_comfy.throw_if_interrupted))
                bar.tick()
        return (torch.stack(out).float(),)


class DiffusionSampler:
    """The paper's diffusion pass with ComfyUI sampling, for one frame at a time: ``(image, mask, fill) -> image``
    (``[H,W,3]`` in [0,1], mask ``[H,W]`` 1 = repaint, ``fill`` the character-free start). Also a
    ``cartoonseg.kenburns`` refiner (the ``CARTOONSEG_DIFFUSION_FILL`` type of the Ken Burns node)."""

    def __init__(self, model, clip, vae, prompt: str, negative_prompt: str, settings) -> None:
        self.model, self.vae, self.settings, self.prompt = model, vae, settings, prompt
        self.positive = _comfy.encode_text(clip, prompt)
        self.negative = _comfy.encode_text(clip, negative_prompt)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        from cartoonseg.diffusion_inpaint import composite, grey_out_hole, resize_image, resize_mask, working_size

        m = mask.float().cpu()
        fill = fill.float().cpu()
        if not bool((m > 0).any()):
            return fill
        s = self.settings
        height, width = fill.shape[:2]
        size = working_size(height, width, s.short_side)
        work = resize_image(fill, size)[None]
        work_mask = (resize_mask(m, size) > 0.5).float()[None]
        concat = self.vae.encode(grey_out_hole(work[0], work_mask[0])[None])
        pos = with_inpaint_latents(self.positive, concat, work_mask[:, None])
        neg = with_inpaint_latents(self.negative, concat, work_mask[:, None])
        _comfy.throw_if_interrupted()
        refined = _comfy.img2img(self.model, self.vae, pos, neg, work, seed=s.seed, steps=s.steps, cfg=s.cfg,
                                 sampler_name=s.sampler, scheduler=s.scheduler, denoise=s.denoise, noise_mask=work_mask)
        refined = resize_image(refined[0].float().clamp(0, 1), (height, width))
        return composite(fill, refined, m).to(image.device)


def with_inpaint_latents(conditioning: list, concat_latent: torch.Tensor, mask: torch.Tensor) -> list:
    """Copy of a CONDITIONING with the masked-image latent and mask attached (core InpaintModelConditioning keys);
    inpainting checkpoints (9-channel UNet) read them, other models ignore them."""
    out = []
    for t in conditioning:
        d = dict(t[1])
        d["concat_latent_image"] = concat_latent
        d["concat_mask"] = mask
        out.append([t[0], d])
    return out


class CartoonSegInpaintDiffusion:
    """Refine the background plate inside the hole with the user's SD checkpoint (ComfyUI sampling)."""

    DESCRIPTION = (
        "Removes characters and re-synthesises the hole with diffusion, as the paper's Ken Burns pipeline: the hole "
        "is first filled (PatchMatch by default), then sampled from that fill with denoise 0.75, DPM++ 2M Karras, "
        "32 steps, cfg 7, seed 0, prompt '<tags>, high quality, masterpiece, no_humans' and a fixed negative prompt "
        "against people. Only masked pixels change. Works with any SD MODEL/CLIP/VAE (inpainting checkpoints get the "
        "masked-image latent too). Runs at short side `short_side` (0 = native) and is resized back."
    )
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "init_fill", "prompt")
    FUNCTION = "refine"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = _comfy.sampler_choices()
        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "vae": ("VAE",),
                "image": ("IMAGE",),
                "mask": ("MASK",),
                "tags": ("STRING", {"default": "", "multiline": True}),
                "negative_prompt": ("STRING", {"default": NEGATIVE_PROMPT, "multiline": True}),
                "init": (list(INIT_FILLS), {"default": "patchmatch"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "steps": ("INT", {"default": 32, "min": 1, "max": 200}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.1}),
                "denoise": ("FLOAT", {"default": 0.75, "min": 0.01, "max": 1.0, "step": 0.01}),
                "sampler_name": (samplers, {"default": "dpmpp_2m" if "dpmpp_2m" in samplers else samplers[0]}),
                "scheduler": (schedulers, {"default": "karras" if "karras" in schedulers else schedulers[0]}),
                "short_side": ("INT", {"default": 1024, "min": 0, "max": 4096, "step": 32}),
            }
        }

    def refine(self, model, clip, vae, image, mask, tags="", negative_prompt=NEGATIVE_PROMPT, init="patchmatch", seed=0,
               steps=32, cfg=7.0, denoise=0.75, sampler_name="dpmpp_2m", scheduler="karras", short_side=1024):
        from cartoonseg.diffusion_inpaint import RefineSettings, background_prompt
        from cartoonseg.inpaint import inpaint

        if init not in INIT_FILLS:
            raise ValueError(f"init must be one of {', '.join(INIT_FILLS)}, got {init!r}")
        settings = RefineSettings(steps=steps, cfg=cfg, denoise=denoise, seed=seed, sampler=sampler_name,
                                  scheduler=scheduler, short_side=short_side)
        image = _comfy.check_image(image)
        mask = _comfy.check_mask(mask)
        _check_batches(image, mask)
        sampler = DiffusionSampler(model, clip, vae, background_prompt(tags), negative_prompt, settings)
        outs, inits = [], []
        with _comfy.steps(image.shape[0]) as bar:
            for b in range(image.shape[0]):
                m = _frame_mask(mask, b, tuple(image.shape[1:3]))
                hole = m > 0.5
                if init == "image" or not bool(hole.any()):
                    fill = image[b].clone()
                else:
                    fill = inpaint(image[b], hole, method=init, patch_size=3, seed=seed,
                                   interrupt=_comfy.throw_if_interrupted).float()
                inits.append(fill)
                outs.append(sampler(image[b], m, fill) if bool((m > 0).any()) else image[b].clone())
                bar.tick()
        return (torch.stack(outs), torch.stack(inits), sampler.prompt)


NODE_CLASS_MAPPINGS = {
    "CartoonSegBackgroundMask": CartoonSegBackgroundMask,
    "CartoonSegInpaintPatchMatch": CartoonSegInpaintPatchMatch,
    "CartoonSegInpaintDiffusion": CartoonSegInpaintDiffusion,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CartoonSegBackgroundMask": "Background Mask from Instances (CartoonSeg)",
    "CartoonSegInpaintPatchMatch": "Inpaint Background: PatchMatch / Telea (CartoonSeg)",
    "CartoonSegInpaintDiffusion": "Inpaint Background: Diffusion Refine (CartoonSeg)",
}
