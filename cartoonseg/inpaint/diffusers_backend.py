"""The ``diffusers`` backend of background refinement (outside ComfyUI): a local ``StableDiffusionInpaintPipeline``
plugged into :func:`cartoonseg.inpaint.diffusion.refine_background` (DPM++ 2M Karras, as the paper).

Optional: needs ``diffusers`` (the extra ``diffusion``); files are loaded locally only, never from the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .._diffusers import dtype_argument, follow_hub_progress_setting, img2img_steps
from .._optional import require
from ..device import precision_of, refuse_cpu_fp16, resolve_dtype
from .diffusion import NEGATIVE_PROMPT, RefineRequest, RefineSettings, refine_background

__all__ = ["DiffusersInpaintBackend", "load_inpaint_pipeline", "refine_with_diffusers"]


def _require_diffusers():
    hint = "inside ComfyUI use the Inpaint Diffusion node instead"
    require("transformers", extra="inpaint", purpose="the diffusion refinement outside ComfyUI", hint=hint)  # CLIP
    diffusers = require("diffusers", extra="inpaint", purpose="the diffusion refinement outside ComfyUI", hint=hint)
    follow_hub_progress_setting(diffusers)
    return diffusers


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
    refuse_cpu_fp16(dtype, device)
    dtype = resolve_dtype(precision_of(dtype), device)  # bf16 on a CPU without bf16 kernels -> fp32, one warning
    common = {"safety_checker": None, "requires_safety_checker": False, "local_files_only": True,
              **dtype_argument(diffusers, dtype)}
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


class DiffusersInpaintBackend:
    """A :data:`~cartoonseg.inpaint.diffusion.RefineBackend` over a ``diffusers`` inpainting pipeline.

    Args:
        pipe: from :func:`load_inpaint_pipeline` (any ``StableDiffusionInpaintPipeline``; its scheduler is used as
            set there, so ``settings.sampler``/``scheduler`` are not read).
        progress: called as ``progress(step, total)`` after every step; raise inside it to cancel.
    """

    def __init__(self, pipe, progress: Callable[[int, int], None] | None = None) -> None:
        self.pipe, self.progress = pipe, progress

    def __call__(self, req: RefineRequest) -> Tensor:
        settings = req.settings
        h, w = req.image.shape[1:3]

        n = img2img_steps(settings.steps, settings.denoise)
        runs = min(int(n * float(settings.denoise)), n)  # the steps diffusers runs at this strength

        def on_step(_pipe, step, _t, kwargs):
            if self.progress is not None:
                self.progress(step + 1, runs)
            return kwargs

        out = self.pipe(
            prompt=req.prompt,
            negative_prompt=req.negative,
            image=req.image.permute(0, 3, 1, 2),
            mask_image=req.mask[:, None],
            height=h,
            width=w,
            strength=settings.denoise,
            num_inference_steps=n,
            guidance_scale=settings.cfg,
            generator=torch.Generator("cpu").manual_seed(int(settings.seed)),
            output_type="pt",
            callback_on_step_end=on_step,
        ).images
        return out.permute(0, 2, 3, 1).float().cpu().clamp(0, 1)


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
    """Diffusion refinement of the hole with a ``diffusers`` pipeline: :func:`refine_background` with a
    :class:`DiffusersInpaintBackend`.

    Args:
        pipe: from :func:`load_inpaint_pipeline`.
        image: original ``[H,W,3]`` float in [0,1].
        mask: ``[H,W]`` in [0,1], 1 = hole.
        init: ``[H,W,3]`` the starting fill (PatchMatch result), same size.
        prompt / negative_prompt: text prompts (see :func:`~cartoonseg.inpaint.diffusion.background_prompt`).
        settings: steps, cfg, denoise, seed, short_side (the sampler is the pipeline's: DPM++ 2M Karras).
        progress: called as ``progress(step, total)`` after every step; raise inside it to cancel.

    Returns:
        ``[H,W,3]`` float: ``init`` (= ``image``) outside the mask, the refined fill inside.
    """
    if image.shape != init.shape or image.shape[:2] != mask.shape:
        raise ValueError(f"image {tuple(image.shape)}, init {tuple(init.shape)} and mask {tuple(mask.shape)} sizes differ")
    out, _ = refine_background(image, mask, DiffusersInpaintBackend(pipe, progress), prompt=prompt,
                               negative_prompt=negative_prompt, settings=settings, init=init)
    return out
