"""ComfyUI nodes: background mask, PatchMatch/Telea inpainting, and diffusion refinement of the background plate.

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943) §6.1: characters are removed
with PatchMatch (patch size 3), then a latent-diffusion inpainting pass (the background's tags as prompt, a fixed
negative prompt, DPM++ 2M Karras, 32 steps, cfg 7, denoise 0.75, seed 0) re-synthesises only the hole. The diffusion
node samples with the user's MODEL / CLIP / VAE through ComfyUI's own sampler (``nodes/_comfy.py``), the way the
Impact Pack detailers do: :class:`ComfyInpaintBackend` plugs it into the library loop
``cartoonseg.inpaint.refine_background``; everything else is ``cartoonseg.inpaint``.

MASK convention: 1 = fill (the characters to remove). Pixels where the mask is 0 are returned unchanged.
"""

from __future__ import annotations

import torch

from cartoonseg.inpaint import INIT_FILLS, INPAINT_METHODS, NEGATIVE_PROMPT
from cartoonseg.inpaint.diffusion import PROMPT_SUFFIX
from cartoonseg.transforms import resize_float

from . import _comfy

CATEGORY = f"{_comfy.CATEGORY}/inpaint"
# the tags input of Inpaint Diffusion and Ken Burns Diffusion Fill (cartoonseg.inpaint.background_prompt reads it)
TAGS_TOOLTIP = ("background tags (e.g. background_tags of Tag Instances), separated by commas or newlines (\\, is a "
                f"comma inside a tag); the prompt is '<tags>, {PROMPT_SUFFIX}'")


def _frame_mask(mask: torch.Tensor, b: int, size: tuple[int, int]) -> torch.Tensor:
    """Frame ``b``'s mask (one mask for all frames, or one per frame), resized to the frame: bilinear, another aspect
    ratio stretched (deliberate, as core ComfyUI's mask nodes and VAE Encode (for Inpainting) fit masks; the tooltips
    and README say so)."""
    m = _comfy.pick(mask, b)
    if tuple(m.shape) != tuple(size):
        m = resize_float(m, size)
    return m.clamp(0, 1)


class CartoonSegBackgroundMask:
    """Union of the chosen instances' masks, dilated and feathered: the region to inpaint to remove them."""

    DESCRIPTION = (
        "MASK (1 = fill) covering the chosen instances: their union, grown by `dilate` pixels (the original used "
        "5 for diffusion inpainting) and optionally feathered outward. indices: 'all' or e.g. '0,2' / '1-3', read as "
        "Select Instances reads its selection (positions a frame does not have are skipped)."
    )
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("1 = pixels to fill (the chosen instances, grown and feathered)",)
    FUNCTION = "make"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "from Segment (after Alpha Mattes the mask "
                                                                  "also covers every pixel a matte reaches)"}),
                "indices": ("STRING", {"default": "all",
                                       "tooltip": "instances to remove: 'all', '0', '0,2', '1-3', '-1' = last; "
                                                  "positions a frame does not have are skipped"}),
                "dilate": ("INT", {"default": 5, "min": 0, "max": 256,
                                   "tooltip": "grow the mask by this many pixels (covers outlines and halos); "
                                              "elliptical kernel of side 2*dilate+1, as the original grows its "
                                              "inpainting mask (Select Instances' dilate uses a square)"}),
                "feather": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 64.0, "step": 0.5,
                                      "tooltip": "soft outward edge of the mask, in pixels (0 = hard)"}),
            }
        }

    def make(self, instances, indices="all", dilate=5, feather=0.0):
        from cartoonseg.ops import background_mask, parse_indices

        frames = _comfy.check_instances(instances)
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
    OUTPUT_TOOLTIPS = ("the image with the masked region filled from its surroundings",)
    FUNCTION = "inpaint"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "image or frames to fill"}),
                "mask": ("MASK", {"tooltip": "1 = fill (e.g. Background Mask); one mask or one per frame. A mask of "
                                             "another size is resized (bilinear) to the image, another aspect ratio "
                                             "stretched, as core nodes do: give a mask of this image"}),
                "method": (list(INPAINT_METHODS), {"default": "patchmatch",
                                           "tooltip": "patchmatch: texture synthesis (the paper); telea: fast, smooth"}),
                "patch_size": ("INT", {"default": 3, "min": 3, "max": 15, "step": 2,
                                       "tooltip": "PatchMatch patch side in pixels (the paper: 3)"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF,
                                 "tooltip": "PatchMatch's random initialisation"}),
                "telea_radius": ("INT", {"default": 3, "min": 1, "max": 64,
                                         "tooltip": "Telea: neighbourhood radius in pixels"}),
            }
        }

    def inpaint(self, image, mask, method="patchmatch", patch_size=3, seed=0, telea_radius=3):
        from cartoonseg.inpaint import inpaint

        image = _comfy.check_image(image)
        mask = _comfy.check_mask(mask)
        _comfy.check_batches(image.shape[0], mask=mask.shape[0])
        out = []
        with _comfy.steps(image.shape[0]) as bar:
            for b in range(image.shape[0]):
                m = _frame_mask(mask, b, tuple(image.shape[1:3]))
                out.append(inpaint(image[b], m > 0.5, method=method, patch_size=patch_size, seed=seed, radius=telea_radius,
                                   interrupt=_comfy.throw_if_interrupted))
                bar.tick()
        return (torch.stack(out).float(),)


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


class ComfyInpaintBackend:
    """A :data:`cartoonseg.inpaint.RefineBackend` over ComfyUI MODEL / CLIP / VAE: KSampler with a noise mask, and the
    masked-image latent for inpainting checkpoints. Text is encoded once per distinct prompt."""

    def __init__(self, model, clip, vae, on_step=None) -> None:
        self.model, self.clip, self.vae = model, clip, vae
        self.encode = _comfy.TextEncoder(clip)
        self.on_step = on_step  # runs after every sampler step (the node's progress bar)

    def __call__(self, req) -> torch.Tensor:
        from cartoonseg.inpaint import grey_out_hole

        positive, negative = self.encode(req.prompt), self.encode(req.negative)
        concat = self.vae.encode(grey_out_hole(req.image[0], req.mask[0])[None])
        positive = with_inpaint_latents(positive, concat, req.mask[:, None])
        negative = with_inpaint_latents(negative, concat, req.mask[:, None])
        s = req.settings
        return _comfy.img2img(self.model, self.vae, positive, negative, req.image, seed=s.seed, steps=s.steps,
                              cfg=s.cfg, sampler_name=s.sampler, scheduler=s.scheduler, denoise=s.denoise,
                              noise_mask=req.mask, on_step=self.on_step)


class CartoonSegInpaintDiffusion:
    """Refine the background plate inside the hole with the user's SD checkpoint (ComfyUI sampling)."""

    DESCRIPTION = (
        "Removes characters and re-synthesises the hole with diffusion, as the paper's Ken Burns pipeline: the hole "
        "is first filled (PatchMatch by default), then sampled from that fill with denoise 0.75, DPM++ 2M Karras, "
        f"32 steps, cfg 7, seed 0, prompt '<tags>, {PROMPT_SUFFIX}' and a fixed negative prompt "
        "against people. Only masked pixels change. Works with any SD MODEL/CLIP/VAE (inpainting checkpoints get the "
        "masked-image latent too). Runs at short side `short_side` (0 = native) and is resized back."
    )
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "init_fill", "prompt")
    OUTPUT_TOOLTIPS = ("the background with the hole re-synthesised by diffusion",
                       "the fill the sampler started from (PatchMatch / Telea / the image)",
                       "the positive prompt used")
    FUNCTION = "refine"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_comfy.checkpoint_inputs(),
                "image": ("IMAGE", {"tooltip": "image or frames to fill"}),
                "mask": ("MASK", {"tooltip": "1 = fill (e.g. Background Mask); one mask or one per frame. A mask of "
                                             "another size is resized (bilinear) to the image, another aspect ratio "
                                             "stretched, as core nodes do: give a mask of this image"}),
                "tags": ("STRING", {"default": "", "multiline": True,
                                    "tooltip": TAGS_TOOLTIP}),
                "negative_prompt": ("STRING", {"default": NEGATIVE_PROMPT, "multiline": True,
                                               "tooltip": "the paper's fixed negative prompt against people"}),
                "init": (list(INIT_FILLS), {"default": "patchmatch",
                                            "tooltip": "fill of the hole the sampler starts from"}),
                **_comfy.sampler_inputs("the initial fill", "the image's own"),
            }
        }

    def refine(self, model, clip, vae, image, mask, tags="", negative_prompt=NEGATIVE_PROMPT, init="patchmatch", seed=0,
               steps=32, cfg=7.0, denoise=0.75, sampler_name="dpmpp_2m", scheduler="karras", short_side=1024):
        from cartoonseg.inpaint import RefineSettings, background_prompt, refine_background

        settings = RefineSettings(steps=steps, cfg=cfg, denoise=denoise, seed=seed, sampler=sampler_name,
                                  scheduler=scheduler, short_side=short_side)
        image = _comfy.check_image(image)
        mask = _comfy.check_mask(mask)
        _comfy.check_batches(image.shape[0], mask=mask.shape[0])
        prompt = background_prompt(tags)
        outs, inits = [], []
        per_frame = int(steps) + 1  # progress: the fill, then each sampler step
        with _comfy.steps(image.shape[0] * per_frame) as bar:
            backend = ComfyInpaintBackend(model, clip, vae, on_step=bar.tick)
            backend.encode(prompt), backend.encode(negative_prompt)  # once, before any frame (as CLIPTextEncode)
            for b in range(image.shape[0]):
                start = bar.done
                out, fill = refine_background(image[b], _frame_mask(mask, b, tuple(image.shape[1:3])), backend,
                                              prompt=prompt, negative_prompt=negative_prompt, settings=settings,
                                              init=init, interrupt=_comfy.throw_if_interrupted)
                outs.append(out)
                inits.append(fill)
                bar.tick(max(1, start + per_frame - bar.done))  # the fill (and steps a frame without hole skipped)
        return (torch.stack(outs), torch.stack(inits), prompt)


NODE_CLASS_MAPPINGS = {
    "CartoonSegBackgroundMask": CartoonSegBackgroundMask,
    "CartoonSegInpaintPatchMatch": CartoonSegInpaintPatchMatch,
    "CartoonSegInpaintDiffusion": CartoonSegInpaintDiffusion,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CartoonSegBackgroundMask": "Background Mask (CartoonSeg)",
    "CartoonSegInpaintPatchMatch": "Inpaint PatchMatch (CartoonSeg)",
    "CartoonSegInpaintDiffusion": "Inpaint Diffusion (CartoonSeg)",
}
