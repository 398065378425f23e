"""Background inpainting (paper §6.1): remove characters with PatchMatch, then refine the hole by diffusion.

* :mod:`~cartoonseg.inpaint.patchmatch`: vectorised multi-scale PatchMatch, OpenCV Telea, background masks;
* :mod:`~cartoonseg.inpaint.lattice`: completion of regular patterns (tiles, planks, bricks) along their lattice of
  repetition (the Ken Burns plane fill uses it);
* :mod:`~cartoonseg.inpaint.diffusion`: prompts, settings and the one refinement loop (:func:`refine_background`)
  with a pluggable sampler backend;
* :mod:`~cartoonseg.inpaint.diffusers_backend`: the ``diffusers`` backend (optional extra ``diffusion``); the
  ComfyUI backend lives in the pack's ``nodes/inpaint.py``;
* :mod:`~cartoonseg.inpaint.cli`: ``python -m cartoonseg inpaint|inpaint-refine`` (or ``python -m cartoonseg.inpaint``).
"""

from .diffusion import (
    INIT_FILLS,
    NEGATIVE_PROMPT,
    NEGATIVE_PROMPT_RELEASED_CODE,
    PEOPLE_TAGS,
    PROMPT_SUFFIX,
    RefineBackend,
    RefineRequest,
    RefineSettings,
    background_prompt,
    composite,
    grey_out_hole,
    refine_background,
    working_size,
)
from .patchmatch import (
    INPAINT_METHODS,
    PatchMatchConfig,
    background_mask,
    fill_method,
    inpaint,
    patchmatch_inpaint,
    telea_inpaint,
)

__all__ = [
    "INIT_FILLS",
    "INPAINT_METHODS",
    "NEGATIVE_PROMPT",
    "NEGATIVE_PROMPT_RELEASED_CODE",
    "PEOPLE_TAGS",
    "PROMPT_SUFFIX",
    "PatchMatchConfig",
    "RefineBackend",
    "RefineRequest",
    "RefineSettings",
    "background_mask",
    "background_prompt",
    "composite",
    "fill_method",
    "grey_out_hole",
    "inpaint",
    "patchmatch_inpaint",
    "refine_background",
    "telea_inpaint",
    "working_size",
]
