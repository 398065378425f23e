"""Configuration of instance-aware style editing (paper §6.2) and its named presets.

Values follow the paper and the authors' scripts: the paper (SD1.5, lineart-anime ControlNet strength 1,
denoise 0.75, 24 steps, DPM++ 2M Karras, the same seed for every instance), the authors' SD1.5 script
``repaint_person.py`` (cfg 9, mask blur 4, only-masked padding 32, duplicate removal at 80 %) and their SDXL script
``run_style.py`` with ``3d_pixar.yaml`` (canny ControlNet, 25 steps, cfg 7, three rounds, 1024 long side).
"""

from __future__ import annotations

import dataclasses
import operator

from ..config import MAX_CANVAS, MAX_CFG, MAX_SAMPLER_STEPS, MAX_SEED
from ..io import MAX_PIXELS
from .hints import HINT_TYPES
from .regions import ORDERS

__all__ = ["BACKGROUND_FILLS", "DEFAULT_NEGATIVE", "DEFAULT_PRESET", "MODES", "PRESETS", "StyleConfig", "style_preset"]

#: Upper bounds of :class:`StyleConfig` fields besides the samplers' (:data:`cartoonseg.config.MAX_CFG`,
#: :data:`~cartoonseg.config.MAX_SAMPLER_STEPS`) and the canvas (:data:`~cartoonseg.config.MAX_CANVAS`).
MAX_CONTROL_STRENGTH = 10.0  # ComfyUI's Apply ControlNet maximum
MAX_FEATHER = 256.0  # px (Gaussian std of the paste-back)
MAX_ITERATIONS = 100

MODES: tuple[str, ...] = ("instance", "global")
BACKGROUND_FILLS: tuple[str, ...] = ("patchmatch", "telea", "none")
#: A common SD1.5 negative prompt (our choice; the original's long yaml negative is SDXL/LoRA specific).
DEFAULT_NEGATIVE = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality, jpeg artifacts, signature, watermark, blurry"
)


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """Parameters of :func:`cartoonseg.style.style_edit`.

    Attributes:
        style_prompt: the global target style, prepended to every instance prompt ("3D pixar style").
        negative_prompt: negative prompt of the instance passes (and of the global baseline).
        background_prompt: extra text for the background pass (e.g. its tags); "" = style prompt only, the
            original's default (``apply_bg_tagger: False``).
        background_negative: appended to the negative prompt for the background pass, to keep characters out
            (``repaint_person.py`` adds "((person)), character, 1girl, 1boy").
        mode: ``"instance"`` (the paper's method) or ``"global"`` (baseline: one img2img of the whole image
            with the style prompt only).
        background_as_instance: also restyle the background as one more "instance" (first, once).
        background_fill: how the characters are removed before the background pass when no clean plate is
            given: ``"patchmatch"`` (the original), ``"telea"`` (fast) or ``"none"`` (sample the image as is;
            only background pixels are pasted either way).
        seed: shared by every pass of an iteration, an integer in [0, 2**64 - 1] (ComfyUI's seed range); iteration
            ``k`` uses ``seed + k*(k+1)/2`` (the original's ``seed += ii``, i.e. seeds s, s+1, s+3, ...), wrapped
            modulo 2**64 so that a seed near the top still gives seeds the samplers accept.
        steps, cfg, sampler, scheduler, denoise: sampler settings (ComfyUI names; "dpmpp_2m" + "karras" is
            DPM++ 2M Karras); steps 1..10000, cfg 0..100, denoise in (0, 1].
        control_strength: ControlNet weight (paper: 1), 0..10.
        hint: built-in hint extractor when no hint image is supplied: ``"lineart"``, ``"canny"`` (or ``"none"``
            to sample without ControlNet even if one is loaded).
        crop_padding: context px around each instance box (only-masked padding; original 32), 0..8192.
        mask_feather: outward feather of the paste-back in px (Gaussian std; original mask_blur 4), 0..256.
        resolution: long side of every sampled region in px (crops are scaled up or down to it), 0..8192; 0 = native.
        masked_denoise: denoise only inside the (feathered) instance mask of a crop, keeping the context latent
            (A1111 "inpaint only masked" with fill "original"); False = plain img2img of the crop.
        iterations: rounds over all instances, each on the previous result (original ``niter``), 1..100.
        order: paint order, see :func:`cartoonseg.style.regions.paint_order`.
        dedupe_threshold: drop an instance when this fraction of it lies in larger kept ones (>= 1 disables).
        min_area: instances with fewer mask pixels are skipped.
    """

    style_prompt: str = ""
    negative_prompt: str = DEFAULT_NEGATIVE
    background_prompt: str = ""
    background_negative: str = "person, character, 1girl, 1boy"
    mode: str = "instance"
    background_as_instance: bool = True
    background_fill: str = "patchmatch"
    seed: int = 0
    steps: int = 24
    cfg: float = 7.0
    sampler: str = "dpmpp_2m"
    scheduler: str = "karras"
    denoise: float = 0.75
    control_strength: float = 1.0
    hint: str = "lineart"
    crop_padding: int = 32
    mask_feather: float = 4.0
    resolution: int = 768
    masked_denoise: bool = True
    iterations: int = 1
    order: str = "auto"
    dedupe_threshold: float = 0.8
    min_area: int = 16

    def __post_init__(self) -> None:
        try:
            seed = operator.index(self.seed)
        except TypeError:
            raise TypeError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}") from None
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must lie in [0, {MAX_SEED}], got {seed}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.background_fill not in BACKGROUND_FILLS:
            raise ValueError(f"background_fill must be one of {BACKGROUND_FILLS}, got {self.background_fill!r}")
        if self.hint not in (*HINT_TYPES, "none"):
            raise ValueError(f"hint must be one of {(*HINT_TYPES, 'none')}, got {self.hint!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"denoise must lie in (0, 1], got {self.denoise}")
        # every range is written as `not lo <= x <= hi`, which also refuses NaN
        for name, lo, hi in (("steps", 1, MAX_SAMPLER_STEPS), ("iterations", 1, MAX_ITERATIONS),
                             ("cfg", 0.0, MAX_CFG), ("control_strength", 0.0, MAX_CONTROL_STRENGTH),
                             ("crop_padding", 0, MAX_CANVAS), ("mask_feather", 0.0, MAX_FEATHER),
                             ("resolution", 0, MAX_CANVAS), ("min_area", 0, MAX_PIXELS)):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}], got {getattr(self, name)}")
        if not self.dedupe_threshold >= 0.0:
            raise ValueError(f"dedupe_threshold must be a number >= 0 (>= 1 disables), got {self.dedupe_threshold}")

    def iteration_seed(self, k: int) -> int:
        """Seed of iteration ``k`` (0-based): ``seed + k*(k+1)/2``, modulo 2**64 (a sampler seed never overflows)."""
        return (int(self.seed) + k * (k + 1) // 2) % (MAX_SEED + 1)


PRESETS: dict[str, StyleConfig] = {
    # Paper §6.2 / repaint_person.py (SD1.5 + control_v11p_sd15s2_lineart_anime)
    "paper_sd15": StyleConfig(steps=24, cfg=9.0, denoise=0.75, hint="lineart", resolution=768),
    # run_style.py + configs/3d_pixar.yaml (SDXL base 1.0 + diffusers_xl_canny_mid); A1111's default
    # denoise for that payload is 0.75.
    "sdxl_canny": StyleConfig(
        style_prompt="3D pixar style",
        steps=25,
        cfg=7.0,
        denoise=0.75,
        hint="canny",
        resolution=1024,
        iterations=3,
        background_negative="",
    ),
}


#: The preset of the front ends' defaults: the CLI's ``--preset`` and the ComfyUI node's widgets (the paper's SD1.5
#: run; it differs from a bare ``StyleConfig()`` in cfg, 9 as in ``repaint_person.py`` instead of 7).
DEFAULT_PRESET = "paper_sd15"


def style_preset(name: str, **overrides) -> StyleConfig:
    """A named preset (``"paper_sd15"``, ``"sdxl_canny"``) with keyword overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown style preset {name!r}; allowed: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
