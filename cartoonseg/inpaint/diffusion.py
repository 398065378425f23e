"""Diffusion refinement of a background plate: prompts, settings, working sizes, and the one refinement loop.

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943), §6.1: after PatchMatch
removes the characters, a latent-diffusion inpainting pass re-synthesises the hole, steered by the background's
tags and a fixed negative prompt. Parameters of the released code (``configs/3dkenburns.yaml``,
``kenburns_effect.py``): 32 steps, cfg 7, denoising strength 0.75, seed 0, DPM++ 2M Karras (the paper; the
code misspelled the sampler key), short side 1024 with the long side floored to a multiple of 32, prompt
``"<background tags>, high quality, masterpiece, no_humans"``. Only the hole pixels of the result are kept, so
no character is ever re-drawn outside the hole, and the hole itself starts from a character-free fill.

:func:`refine_background` is the loop: first fill (PatchMatch / Telea / none), resize to the working size, one
sampler call, resize back, composite inside the hole. The sampling itself is a *backend* (the pattern of
:mod:`cartoonseg.style.editor`): any callable taking a :class:`RefineRequest` and returning the sampled image.
:class:`cartoonseg.inpaint.diffusers_backend.DiffusersInpaintBackend` runs a ``diffusers`` pipeline (the
``inpaint-refine`` CLI); the ComfyUI node plugs in ComfyUI's own sampler over the user's MODEL/CLIP/VAE.

Conventions: images ``[H,W,3]`` float RGB in [0,1] (torch); masks ``[H,W]`` float, 1 = fill.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import MAX_CANVAS, MAX_CFG, MAX_SAMPLER_STEPS, MAX_SEED
from ..io import MAX_PIXELS, to_float_mask, to_float_rgb
from ..tags import parse_tag_list, tag_key, unique_tags
from ..transforms import resize_image, resize_mask
from .patchmatch import INPAINT_METHODS, inpaint

__all__ = [
    "INIT_FILLS",
    "NEGATIVE_PROMPT",
    "NEGATIVE_PROMPT_RELEASED_CODE",
    "PEOPLE_TAGS",
    "PROMPT_SUFFIX",
    "RefineBackend",
    "RefineRequest",
    "RefineSettings",
    "background_prompt",
    "composite",
    "grey_out_hole",
    "refine_background",
    "working_size",
]

#: The paper's negative prompt (§6.1), the default.
NEGATIVE_PROMPT = "human, single, person, girl, 1girl, boy, 1boy, creature, animal, alien, robot, body"
#: The released code's variant (has "cat", lacks boy/1boy); selectable for parity with the original outputs.
NEGATIVE_PROMPT_RELEASED_CODE = "cat, human, single, person, girl, 1girl, creature, animal, alien, robot, body"
#: Appended to the background tags (released code).
PROMPT_SUFFIX = "high quality, masterpiece, no_humans"
#: How the hole is filled before sampling: a classical fill (:data:`INPAINT_METHODS`) or ``"image"`` (no fill).
INIT_FILLS: tuple[str, ...] = (*INPAINT_METHODS, "image")
#: Tags describing people, left out of every background prompt (both negative prompts' words and the tagger's
#: head-count tags): they would fight the negative prompt (PatchMatch leftovers can make the tagger see a character).
PEOPLE_TAGS: frozenset[str] = frozenset(
    {t.strip() for t in (NEGATIVE_PROMPT + ", " + NEGATIVE_PROMPT_RELEASED_CODE).split(",")}
    | {"solo", "multiple_girls", "multiple_boys", "2girls", "2boys", "3girls", "3boys", "1other"}
)
_PEOPLE_KEYS = frozenset(map(tag_key, PEOPLE_TAGS))


@dataclasses.dataclass(frozen=True)
class RefineSettings:
    """Sampling parameters of the refinement (defaults: the original's).

    Attributes:
        steps: sampling steps (32), 1..10000.
        cfg: classifier-free guidance scale (7), 0..100.
        denoise: denoising strength in (0,1] (0.75): the fill is kept as the starting point.
        seed: noise seed (0), an integer in [0, 2**64 - 1]; the same seed reproduces the result.
        sampler: ComfyUI sampler name (``"dpmpp_2m"`` = DPM++ 2M).
        scheduler: ComfyUI scheduler name (``"karras"``).
        short_side: working resolution: the short side is scaled to this and both sides floored to a multiple
            of 32 (1024 as the original; 0 = native size floored to a multiple of 8); 0 or 64..8192.
    """

    steps: int = 32
    cfg: float = 7.0
    denoise: float = 0.75
    seed: int = 0
    sampler: str = "dpmpp_2m"
    scheduler: str = "karras"
    short_side: int = 1024

    def __post_init__(self) -> None:
        try:
            seed = operator.index(self.seed)
        except TypeError:
            raise TypeError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}") from None
        if not 0 <= seed <= MAX_SEED:  # what every sampler (torch generators, ComfyUI) accepts
            raise ValueError(f"seed must lie in [0, {MAX_SEED}], got {seed}")
        if not 1 <= self.steps <= MAX_SAMPLER_STEPS:
            raise ValueError(f"steps must lie in [1, {MAX_SAMPLER_STEPS}], got {self.steps}")
        if not 0.0 <= self.cfg <= MAX_CFG:  # also refuses NaN
            raise ValueError(f"cfg must lie in [0, {MAX_CFG:g}], got {self.cfg}")
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"denoise must lie in (0,1], got {self.denoise}")
        if not (self.short_side == 0 or 64 <= self.short_side <= MAX_CANVAS):
            raise ValueError(f"short_side must be 0 (native) or in [64, {MAX_CANVAS}], got {self.short_side}")


def _escape(tag: str) -> str:
    return re.sub(r"(?<!\\)([()\[\]])", r"\\\1", tag)


def background_prompt(tags=None, *, suffix: str = PROMPT_SUFFIX, drop_people_tags: bool = True) -> str:
    """Positive prompt from background tags: ``"tag1, tag2, ..., high quality, masterpiece, no_humans"``.

    Args:
        tags: None/"" (no tags), a tag list string (tags separated by commas or newlines, ``\\,`` a comma inside
            a tag: :func:`cartoonseg.tags.parse_tag_list`, so Tag Instances' ``background_tags`` keeps such names
            whole), a ``{tag: prob}`` dict (sorted by probability), or an iterable of tags / ``(tag, prob)``
            pairs. Underscores are kept (as the original did), parentheses are escaped (``\\(``; already escaped
            ones are left alone) so prompt weighting syntax is not triggered. A tag is dropped when an earlier
            one or a tag of ``suffix`` is the same name as :func:`cartoonseg.tags.tag_key` compares names (as the
            tagger and Merge Prompts do: ``Sky``/``sky``, ``long_hair``/``long hair``); the first spelling is kept
            (:func:`cartoonseg.tags.unique_tags`, the rule of Merge Prompts' background prompt too).
        suffix: appended after the tags.
        drop_people_tags: remove tags describing people (:data:`PEOPLE_TAGS`: 1girl, solo, ...), which would
            fight the negative prompt (PatchMatch leftovers can make the tagger see a character); matched by
            ``tag_key`` too, as Merge Prompts' background prompt drops them.

    Returns:
        The prompt string.
    """
    items: list[str]
    if tags is None:
        items = []
    elif isinstance(tags, str):
        items = parse_tag_list(tags)
    elif isinstance(tags, Mapping):
        items = [str(k) for k, _ in sorted(tags.items(), key=lambda kv: -float(kv[1]))]
    elif isinstance(tags, Iterable):
        items = [str(t[0]) if isinstance(t, (tuple, list)) else str(t) for t in tags]
    else:
        raise TypeError(f"tags must be a string, dict or list of tags, got {type(tags).__name__}")
    # one duplicate rule with the tagger and Merge Prompts (cartoonseg.tags.unique_tags, names compared by tag_key:
    # case, spaces vs underscores and \\( escapes ignored), so "Sky" after "sky" or "No Humans" before the suffix
    # is not repeated
    drop = set(parse_tag_list(suffix))
    if drop_people_tags:
        drop |= _PEOPLE_KEYS
    out = [_escape(t.strip()) for t in unique_tags(items, drop)]
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
    short = min(height, width)
    # integer arithmetic: ``height * (short_side / short)`` in floats can land just below a multiple of 32 (e.g. a
    # 725 px short side gave 1023.99... and so 992 instead of 1024)
    h = max(64, height * short_side // short // 32 * 32)
    w = max(64, width * short_side // short // 32 * 32)
    if h * w > MAX_PIXELS:  # a thin strip scaled up by its short side
        raise ValueError(f"short_side {short_side} makes a {w}x{h} working size for a {width}x{height} image, over the "
                         f"{MAX_PIXELS}-pixel limit; use a smaller short_side or 0 (native)")
    return h, w


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


# ---------------------------------------------------------------------------------------------- the loop
@dataclasses.dataclass(frozen=True)
class RefineRequest:
    """One sampler call of :func:`refine_background`.

    Attributes:
        image: ``[1,h,w,3]`` float RGB in [0,1] at the working size: the first fill (hole already filled).
        mask: ``[1,h,w]`` binary float, 1 = resample (the hole at the working size).
        prompt, negative: positive / negative text.
        settings: steps, cfg, denoise, seed, sampler, scheduler.
    """

    image: Tensor
    mask: Tensor
    prompt: str
    negative: str
    settings: RefineSettings


#: A backend samples one request and returns ``[1,h,w,3]`` (or ``[h,w,3]``) float RGB in [0,1].
RefineBackend = Callable[[RefineRequest], Tensor]


def refine_background(
    image: Tensor,
    mask: Tensor,
    backend: RefineBackend,
    *,
    prompt: str,
    negative_prompt: str = NEGATIVE_PROMPT,
    settings: RefineSettings = RefineSettings(),
    init: str | Tensor = "patchmatch",
    interrupt: Callable[[], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Diffusion refinement of the hole of one image, with any sampler ``backend``.

    Args:
        image: ``[H,W,3]`` float RGB in [0,1].
        mask: ``[H,W]`` in [0,1], 1 = hole: the pixels above 0.5 are re-synthesised, soft edges blend the refined
            fill in.
        backend: see :data:`RefineBackend`.
        prompt / negative_prompt: text (see :func:`background_prompt`).
        settings: :class:`RefineSettings`; ``short_side`` sets the working size (:func:`working_size`).
        init: the first fill of the hole (pixels where ``mask > 0.5``): ``"patchmatch"`` (patch 3, as the original),
            ``"telea"``, ``"image"`` (none), or a ready ``[H,W,3]`` fill (only its hole pixels are used).
        interrupt: cancel check (raise to stop), called during the fill and before sampling.

    Returns:
        ``(result, fill)``: both ``[H,W,3]``; ``result`` equals ``fill`` (= ``image``) wherever ``mask == 0``. A
        mask without a hole (no pixel above 0.5) returns ``image`` without calling the backend; a hole that vanishes
        at the working size is sampled over every working pixel it touches.
    """
    if image.dim() != 3 or image.shape[:2] != mask.shape:
        raise ValueError(f"image {tuple(image.shape)} and mask {tuple(mask.shape)} sizes differ")
    # uint8 images and masks are 0..255 (io's rules; a bare .float() would mix 0..255 with the backend's [0,1])
    image, mask = to_float_rgb(image), to_float_mask(mask)
    hole = mask > 0.5
    if isinstance(init, Tensor):
        if init.dim() != 3 or init.shape[:2] != image.shape[:2]:
            raise ValueError(f"image {tuple(image.shape)} and init {tuple(init.shape)} sizes differ")
        fill = to_float_rgb(init, name="init")
    elif init not in INIT_FILLS:
        raise ValueError(f"init must be one of {', '.join(INIT_FILLS)} or an image, got {init!r}")
    elif init == "image" or not bool(hole.any()):
        fill = image.clone()
    else:
        fill = inpaint(image, hole, method=init, patch_size=3, seed=settings.seed, interrupt=interrupt).float()
    fill = torch.where(hole[..., None], fill, image)  # exactly the image outside the hole (a fill's round trip through
    # 0..255 may move it by an ulp; a given init may differ there), so no pixel outside the mask changes
    if not bool(hole.any()):  # nothing to re-synthesise (soft values alone only say how much of it to blend in)
        return image.clone(), fill
    if interrupt is not None:
        interrupt()
    size = working_size(image.shape[0], image.shape[1], settings.short_side)
    small = resize_mask(mask, size) > 0.5
    if not bool(small.any()):  # a hole thinner than a working pixel (downscaled): sample every pixel it touches
        small = F.adaptive_max_pool2d(hole.float()[None, None], size)[0, 0] > 0
    request = RefineRequest(image=resize_image(fill, size)[None], mask=small.float()[None],
                            prompt=prompt, negative=negative_prompt, settings=settings)
    refined = backend(request)
    refined = refined[0] if refined.dim() == 4 else refined
    refined = resize_image(refined.float().cpu().clamp(0, 1), tuple(image.shape[:2]))
    # blend against the character-free fill (equal to ``image`` outside the hole), so soft mask edges never
    # bring character colours back
    return composite(fill, refined, mask), fill
