"""What the two ``diffusers`` backends (:mod:`cartoonseg.style.diffusers_backend`,
:mod:`cartoonseg.inpaint.diffusers_backend`) share."""

from __future__ import annotations

import math

__all__ = ["follow_hub_progress_setting", "img2img_steps"]


def img2img_steps(steps: int, denoise: float) -> int:
    """``num_inference_steps`` for a diffusers img2img/inpaint call with ``strength=denoise``: ``steps``, raised so
    that at least one step runs (diffusers runs ``int(num_inference_steps * strength)`` of them and fails on an
    empty schedule, e.g. 1 step at denoise 0.75)."""
    steps, denoise = int(steps), float(denoise)
    if steps < 1 or not 0.0 < denoise <= 1.0:
        raise ValueError(f"need steps >= 1 and denoise in (0, 1], got steps={steps}, denoise={denoise}")
    return max(steps, math.ceil(1.0 / denoise - 1e-9))


def follow_hub_progress_setting(diffusers) -> None:
    """Make the ``diffusers`` module's loading bars follow huggingface_hub's setting (``HF_HUB_DISABLE_PROGRESS_BARS``),
    as transformers' bars do; the CLI sets it with ``-q`` or when stderr is not a terminal. Pass the module that
    ``require("diffusers", ...)`` returned."""
    from huggingface_hub.utils import are_progress_bars_disabled

    if are_progress_bars_disabled():
        diffusers.utils.logging.disable_progress_bar()
