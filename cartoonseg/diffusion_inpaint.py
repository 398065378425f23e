"""Diffusion refinement of a background plate: prompts, working sizes, compositing, and a ``diffusers`` runner.

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943), §6.1: after PatchMatch
removes the characters, a latent-diffusion inpainting pass re-synthesises the hole, steered by the background's
tags and a fixed negative prompt. Parameters of the released code (``configs/3dkenburns.yaml``,
``kenburns_effect.py``): 32 steps, cfg 7, denoising strength 0.75, seed 0, DPM++ 2M Karras (the paper; the
code misspelled the sampler key), short side 1024 with the long side floored to a multiple of 32, prompt
``"<background tags>, high quality, masterpiece, no_humans"``. Only the hole pixels of the result are kept, so
no character is ever re-drawn outside the hole, and the hole itself starts from a character-free fill.

The ComfyUI node (``nodes/inpaint.py``) samples with ComfyUI's own MODEL/CLIP/VAE and uses the helpers here for
everything else; :func:`refine_with_diffusers` is the same refinement outside ComfyUI (the ``inpaint-refine``
CLI), loading local files only (:func:`load_inpaint_pipeline`).

Conventions: images ``[H,W,3]`` float RGB in [0,1] (torch); masks ``[H,W]`` float, 1 = fill.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ._optional import require

__all__ = [
    "NEGATIVE_PROMPT",
    "NEGATIVE_PROMPT_RELEASED_CODE",
    "PROMPT_SUFFIX",
    "RefineSettings",
    "background_prompt",
    "composite",
    "grey_out_hole",
    "load_inpaint_pipeline",
    "refine_with_diffusers",
    "resize_image",
    "resize_mask",
    "working_size",
]

#: The paper's negative prompt (§6.1), the default.
NEGATIVE_PROMPT = "human, single, person, girl, 1girl, boy, 1boy, creature, animal, alien, robot, body"
#: The released code's variant (has "cat", lacks boy/1boy); selectable for parity with the original outputs.
NEGATIVE_PROMPT_RELEASED_CODE = "cat, human, single, person, girl, 1girl, creature, animal, alien, robot, body"
#: Appended to the background tags (released code).
PROMPT_SUFFIX = "high quality, masterpiece, no_humans"
_CHARACTER_TAGS = {t.strip() for t in (NEGATIVE_PROMPT + ", " + NEGATIVE_PROMPT_RELEASED_CODE).split(",")} | {
    "solo", "multiple_girls", "multiple_boys", "2girls", "2boys", "3girls", "3boys", "1other",
}


@dataclasses.dataclass(frozen=True)
class RefineSettings:
    """Sampling parameters of the refinement (defaults: the original's).

    Attributes:
        steps: sampling steps (32).
        cfg: classifier-free guidance scale (7).
        denoise: denoising strength in (0,1] (0.75): the fill is kept as the starting point.
        seed: noise seed (0); the same seed reproduces the result.
        sampler: ComfyUI sampler name (``"dpmpp_2m"`` = DPM++ 2M).
        scheduler: ComfyUI scheduler name (``"karras"``).
        short_side: working resolution: the short side is scaled to this and both sides floored to a multiple
            of 32 (1024 as the original; 0 = native size floored to a multiple of 8).
    """

    steps: int = 32
    cfg: float = 7.0
    denoise: float = 0.75
    seed: int = 0
    sampler: str = "dpmpp_2m"
    scheduler: str = "karras"
    short_side: int = 1024

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"denoise must lie in (0,1], got {self.denoise}")
        if self.short_side != 0 and self.short_side < 64:
            raise ValueError(f"short_side must be 0 (native) or >= 64, got {self.short_side}")


def _escape(tag: str) -> str:
    return re.sub(r"(?<!\\)([()\[\]])", r"\\\1", tag)


def background_prompt(tags=None, *, suffix: str = PROMPT_SUFFIX, drop_character_tags: bool = True) -> str:
    """Positive prompt from background tags: ``"tag1, tag2, ..., high quality, masterpiece, no_humans"``.

    Args:
        tags: None/"" (no tags), a comma-separated prompt string, a ``{tag: prob}`` dict (sorted by probability),
            or an iterable of tags / ``(tag, prob)`` pairs. Underscores are kept (as the original did),
            parentheses are escaped (``\\(``; already escaped ones are left alone) so prompt weighting syntax is
            not triggered.
        suffix: appended after the tags.
        drop_character_tags: remove tags describing people (1girl, solo, ...), which would fight the negative
            prompt (PatchMatch leftovers can make the tagger see a character).

    Returns:
        The prompt string.
    """
    items: list[str]
    if tags is None:
        items = []
    elif isinstance(tags, str):
        items = [t.strip() for t in tags.split(",")]
    elif isinstance(tags, Mapping):
        items = [str(k) for k, _ in sorted(tags.items(), key=lambda kv: -float(kv[1]))]
    elif isinstance(tags, Iterable):
        items = [str(t[0]) if isinstance(t, (tuple, list)) else str(t) for t in tags]
    else:
        raise TypeError(f"tags must be a string, dict or list of tags, got {type(tags).__name__}")
    seen: set[str] = set()
    out: list[str] = []
    suffix_items = {s.strip() for s in suffix.split(",") if s.strip()}
    for t in items:
        t = t.strip()
        if not t or t in seen or t in suffix_items:
            continue
        if drop_character_tags and t.replace(" ", "_") in _CHARACTER_TAGS | {c.replace(" ", "_") for c in _CHARACTER_TAGS}:
            continue
        seen.add(t)
        out.append(_escape(t))
    if suffix.strip():
        out.append(suffix.strip())
    return ", ".join(out)


def working_size(height: int, width: int, short_side: int = 1024) -> tuple[int, int]:
    """(h, w) the diffusion model runs at: short side -> ``short_side``, both floored to a multiple of 32;
    ``short_side=0``: native size floored to a multiple of 8 (at least 8 px each)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if short_side == 0:
        return max(8, height // 8 * 8), max(8, width // 8 * 8)
    scale = short_side / min(height, width)
    return max(64, math.floor(height * scale / 32) * 32), max(64, math.floor(width * scale / 32) * 32)


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """``[H,W,C]`` float image -> ``[h,w,C]`` (bicubic with antialias when shrinking, clamped to [0,1])."""
    if tuple(image.shape[:2]) == tuple(size):
        return image.clone()
    x = image.permute(2, 0, 1)[None].float()
    shrink = size[0] < image.shape[0] or size[1] < image.shape[1]
    y = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrink)
    return y[0].permute(1, 2, 0).clamp(0, 1)


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """``[H,W]`` mask -> ``[h,w]``, bilinear, in [0,1]."""
    if tuple(mask.shape) == tuple(size):
        return mask.clone().float()
    return F.interpolate(mask[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)


def grey_out_hole(image: Tensor, mask: Tensor) -> Tensor:
    """The masked-image input of inpainting models: hole pixels (mask > 0.5) set to 0.5 grey."""
    keep = (mask <= 0.5).float()[..., None]
    return (image - 0.5) * keep + 0.5


def composite(original: Tensor, refined: Tensor, mask: Tensor) -> Tensor:
    """``original * (1 - mask) + refined * mask``; pixels with ``mask == 0`` are exactly the original."""
    if refined.shape != original.shape:
        refined = resize_image(refined, original.shape[:2])
    m = mask.float().clamp(0, 1)[..., None]
    out = original * (1 - m) + refined * m
    return torch.where(m > 0, out, original)


# ---------------------------------------------------------------------------------------------- diffusers runner
def _require_diffusers():
    return require("diffusers", extra="diffusion", purpose="the diffusion refinement outside ComfyUI",
                   hint="inside ComfyUI use the CartoonSegInpaintDiffusion node instead")


def load_inpaint_pipeline(
    path: str | os.PathLike,
    *,
    config_dir: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """A ``diffusers`` ``StableDiffusionInpaintPipeline`` from local files only (never the network).

    Args:
        path: a diffusers pipeline folder (``model_index.json`` + component folders), or a single-file SD1.x
            checkpoint (``.safetensors``/``.ckpt``; inpainting 9-channel or regular 4-channel UNet).
        config_dir: for single files: a local diffusers config tree of the matching model (the JSON/TXT files
            of e.g. ``stable-diffusion-v1-5/stable-diffusion-inpainting``, no weights needed). Required, because
            without it diffusers would try to download one.
        dtype: float32 or bfloat16 (never float16 on CPU).

    Raises:
        FileNotFoundError / ValueError with the fix in the message.
    """
    diffusers = _require_diffusers()
    path = Path(path).expanduser()
    if dtype == torch.float16 and torch.device(device).type == "cpu":
        raise ValueError("float16 is extremely slow on CPU; use torch.float32 or torch.bfloat16")
    common = {"safety_checker": None, "requires_safety_checker": False, "torch_dtype": dtype, "local_files_only": True}
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
        pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(str(path), **common)
    elif path.is_file():
        if config_dir is None or not Path(config_dir).is_dir():
            raise ValueError(
                f"single-file checkpoint {path} needs --config-dir: a local diffusers config folder (the *.json and "
                "*.txt files of https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-inpainting or of the "
                "model the checkpoint derives from); without it diffusers would try to download one"
            )
        pipe = diffusers.StableDiffusionInpaintPipeline.from_single_file(str(path), config=str(config_dir), **common)
    else:
        raise FileNotFoundError(f"diffusion model not found: {path}")
    pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, use_karras_sigmas=True, algorithm_type="dpmsolver++", solver_order=2
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def refine_with_diffusers(
    pipe,
    image: Tensor,
    mask: Tensor,
    init: Tensor,
    *,
    prompt: str,
    negative_prompt: str = NEGATIVE_PROMPT,
    settings: RefineSettings = RefineSettings(),
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Diffusion refinement of the hole with a ``diffusers`` inpainting pipeline (DPM++ 2M Karras).

    Args:
        pipe: from :func:`load_inpaint_pipeline` (any ``StableDiffusionInpaintPipeline``).
        image: original ``[H,W,3]`` float in [0,1].
        mask: ``[H,W]`` in [0,1], 1 = hole.
        init: ``[H,W,3]`` the starting fill (PatchMatch result), same size.
        prompt / negative_prompt: text prompts (see :func:`background_prompt`).
        settings: :class:`RefineSettings` (steps, cfg, denoise, seed, short_side; the sampler is fixed to
            DPM++ 2M Karras here).
        progress: called as ``progress(step, total)`` after every step; raise inside it to cancel.

    Returns:
        ``[H,W,3]`` float: ``init`` (= ``image``) outside the mask, the refined fill inside.
    """
    if image.shape != init.shape or image.shape[:2] != mask.shape:
        raise ValueError(f"image {tuple(image.shape)}, init {tuple(init.shape)} and mask {tuple(mask.shape)} sizes differ")
    size = working_size(image.shape[0], image.shape[1], settings.short_side)
    work = resize_image(init.float(), size)
    work_mask = (resize_mask(mask, size) > 0.5).float()
    gen = torch.Generator("cpu").manual_seed(int(settings.seed))
    total = settings.steps

    def on_step(_pipe, step, _t, kwargs):
        if progress is not None:
            progress(step + 1, total)
        return kwargs

    out = pipe(
        prompt=prompt,
        negative_prompt=negative_prompt,
        image=work.permute(2, 0, 1)[None],
        mask_image=work_mask[None, None],
        height=size[0],
        width=size[1],
        strength=settings.denoise,
        num_inference_steps=settings.steps,
        guidance_scale=settings.cfg,
        generator=gen,
        output_type="pt",
        callback_on_step_end=on_step,
    ).images
    refined = out[0].permute(1, 2, 0).float().cpu().clamp(0, 1)
    refined = resize_image(refined, tuple(image.shape[:2]))
    # blend against the character-free fill (equal to ``image`` outside the hole), so soft mask edges never
    # bring character colours back
    return composite(init.float(), refined, mask.float())
