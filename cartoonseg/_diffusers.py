"""What the two ``diffusers`` backends (:mod:`cartoonseg.style.diffusers_backend`,
:mod:`cartoonseg.inpaint.diffusers_backend`) share."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math

__all__ = ["dtype_argument", "follow_hub_progress_setting", "img2img_steps", "quiet_library_logs"]


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


def dtype_argument(diffusers, dtype) -> dict:
    """The keyword for a model dtype in diffusers' ``from_pretrained`` / ``from_single_file``: ``{"dtype": dtype}``
    where the installed diffusers takes it (the versions that deprecate ``torch_dtype`` with a FutureWarning, which
    came with the helper ``diffusers.utils.deprecation_utils._resolve_dtype``), else ``{"torch_dtype": dtype}`` (the
    older versions down to the 0.30 the extras allow, which do not know ``dtype``). Pass the module that
    ``require("diffusers", ...)`` returned."""
    deprecation = getattr(getattr(diffusers, "utils", None), "deprecation_utils", None)
    return {"dtype": dtype} if hasattr(deprecation, "_resolve_dtype") else {"torch_dtype": dtype}


@contextlib.contextmanager
def quiet_library_logs(quiet: bool = True):
    """While the block runs (a loading call of ours, under the CLI's ``-q``), diffusers' and transformers' log
    notices below ERROR are hidden (e.g. "requires torchvision ... falling back", "install accelerate"); the
    loggers' levels are restored afterwards, so nothing changes for the rest of the process (e.g. ComfyUI)."""
    if not quiet:
        yield
        return
    from ._optional import require

    # each library sets its root logger's level once, when first used: make that happen before ours
    if importlib.util.find_spec("diffusers") is not None:
        require("diffusers", extra="diffusion", purpose="loading models").utils.logging.get_verbosity()
    if importlib.util.find_spec("transformers") is not None:
        require("transformers", extra="depth", purpose="loading models").utils.logging.get_verbosity()
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
