"""Instance-aware style editing (paper §6.2): per-instance img2img with merged prompts, pasted back in z-order.

Library side of the ComfyUI node ``CartoonSegInstanceStyleEdit`` and of ``python -m cartoonseg style``:

* :mod:`.config`: :class:`StyleConfig` and presets (``paper_sd15``, ``sdxl_canny``);
* :mod:`.regions`: crop-with-context planning, paint order, de-duplication, feathered paste-back;
* :mod:`.hints`: built-in lineart / Canny hint extractors (torch);
* :mod:`.prompts`: per-instance prompts (reusing the tagger's prompt merging);
* :mod:`.editor`: the backend-independent loop (:func:`style_edit`, :func:`style_edit_batch`);
* :mod:`.diffusers_backend`: the same pipeline on ``diffusers`` (imported lazily, optional dependency).
"""

from .config import PRESETS, StyleConfig, style_preset
from .editor import PassRecord, SampleRequest, StyleResult, count_passes, style_edit, style_edit_batch
from .hints import canny, extract_hint, lineart
from .prompts import instance_prompts, join_prompt
from .regions import CropPlan, dedupe_masks, feather_alpha, paint_order, paste, plan_crop

__all__ = [
    "PRESETS",
    "CropPlan",
    "PassRecord",
    "SampleRequest",
    "StyleConfig",
    "StyleResult",
    "canny",
    "count_passes",
    "dedupe_masks",
    "extract_hint",
    "feather_alpha",
    "instance_prompts",
    "join_prompt",
    "lineart",
    "paint_order",
    "paste",
    "plan_crop",
    "style_edit",
    "style_edit_batch",
    "style_preset",
]
