"""Instance-aware style editing outside ComfyUI: a :mod:`cartoonseg.style.editor` backend on ``diffusers``.

Paper §6.2 settings map to diffusers as follows: DPM++ 2M Karras =
``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)``; lineart (SD1.5)
or canny (SDXL) ControlNet through ``StableDiffusion[XL]ControlNetImg2ImgPipeline``; with ``masked_denoise`` the
instance crops go through ``StableDiffusion[XL]ControlNetInpaintPipeline`` (a plain 4-channel UNet keeps the context
latents outside the mask, like A1111's "inpaint only masked"). An inpainting checkpoint (9-channel UNet) runs every
pass through the inpainting pipelines (a full mask where the pass has none). All pipelines share one set of components.

Note on steps: diffusers img2img runs ``int(steps * strength)`` denoising steps (as A1111 does by default), ComfyUI's
KSampler with ``denoise`` runs ``steps``; so 24 steps at 0.75 are 18 model calls here and 24 in the node.

``diffusers`` (and ``transformers`` for the CLIP text encoder) are imported lazily: the rest of cartoonseg works
without them. Loading is offline-safe: everything is read with ``local_files_only=True``, and a single-file
checkpoint needs a local diffusers config folder (``config=``), because diffusers would otherwise fetch the
config from the Hugging Face hub.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from .._diffusers import dtype_argument, follow_hub_progress_setting, img2img_steps
from .._optional import require
from .config import StyleConfig
from .editor import SampleRequest

__all__ = ["SCHEDULERS", "DiffusersBackend", "load_components", "load_controlnet", "make_scheduler", "require_diffusers"]

#: ComfyUI sampler name -> (diffusers scheduler class, extra config)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
}
_KARRAS_OK = {"DPMSolverMultistepScheduler", "EulerDiscreteScheduler"}


def require_diffusers():
    """Import and return ``diffusers``, or raise :class:`~cartoonseg._optional.MissingDependencyError` naming the
    extra to install."""
    hint = "inside ComfyUI use the Instance Style Edit node instead"
    require("transformers", extra="style", purpose="the diffusers style-editing backend", hint=hint)  # CLIP
    diffusers = require("diffusers", extra="style", purpose="the diffusers style-editing backend", hint=hint)
    follow_hub_progress_setting(diffusers)
    return diffusers


def make_scheduler(base_config: Mapping, sampler: str, scheduler: str):
    """A diffusers scheduler equivalent to ComfyUI's ``sampler``/``scheduler`` names, from a model's scheduler
    config (``"dpmpp_2m"`` + ``"karras"`` = DPM++ 2M Karras)."""
    diffusers = require_diffusers()
    if sampler not in SCHEDULERS:
        raise ValueError(f"sampler {sampler!r} has no diffusers equivalent here; allowed: {', '.join(SCHEDULERS)}")
    if scheduler not in ("karras", "normal"):
        raise ValueError(f"scheduler {scheduler!r} has no diffusers equivalent here; allowed: karras, normal")
    cls_name, extra = SCHEDULERS[sampler]
    extra = dict(extra)
    if scheduler == "karras":
        if cls_name not in _KARRAS_OK:
            raise ValueError(f"sampler {sampler!r} does not support Karras sigmas in diffusers; use scheduler 'normal'")
        extra["use_karras_sigmas"] = True
    return getattr(diffusers, cls_name).from_config(dict(base_config), **extra)


_PIPELINES = {
    # (sdxl, controlnet, masked) -> class name
    (False, True, False): "StableDiffusionControlNetImg2ImgPipeline",
    (False, True, True): "StableDiffusionControlNetInpaintPipeline",
    (False, False, False): "StableDiffusionImg2ImgPipeline",
    (False, False, True): "StableDiffusionInpaintPipeline",
    (True, True, False): "StableDiffusionXLControlNetImg2ImgPipeline",
    (True, True, True): "StableDiffusionXLControlNetInpaintPipeline",
    (True, False, False): "StableDiffusionXLImg2ImgPipeline",
    (True, False, True): "StableDiffusionXLInpaintPipeline",
}


class DiffusersBackend:
    """Sampler backend over diffusers components.

    Args:
        components: ``vae, text_encoder, tokenizer, unet, scheduler`` (+ ``text_encoder_2, tokenizer_2`` for SDXL),
            e.g. ``pipeline.components`` of a loaded StableDiffusion[XL]Pipeline.
        config: :class:`StyleConfig` (steps, cfg, sampler, scheduler, denoise, control_strength).
        controlnet: an optional ``ControlNetModel``; requests with a hint use it.
        device: where the models run (they are moved there once).
        step_callback: called at the end of every denoising step (raise from it to cancel).

    Attributes:
        calls: list of ``(pipeline class name, prompt, negative, seed)`` per request, for logs.
    """

    def __init__(
        self,
        components: Mapping[str, object],
        config: StyleConfig,
        *,
        controlnet=None,
        device: torch.device | str = "cpu",
        step_callback: Callable[[], None] | None = None,
    ) -> None:
        require_diffusers()
        missing = [k for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler") if components.get(k) is None]
        if missing:
            raise ValueError(f"diffusers components missing: {', '.join(missing)}")
        self.components = {k: v for k, v in components.items() if v is not None}
        self.sdxl = self.components.get("text_encoder_2") is not None
        channels = getattr(getattr(self.components["unet"], "config", None), "in_channels", 4)
        if channels not in (4, 9):
            raise ValueError(f"the UNet takes {channels} input channels; style editing needs an SD/SDXL UNet with 4 "
                             "(a regular checkpoint) or 9 (an inpainting checkpoint)")
        #: an inpainting checkpoint (9-channel UNet) runs every request through the inpainting pipelines, a request
        #: without a mask with a full one (the img2img pipelines cannot feed its mask and masked-image channels)
        self.inpainting_unet = channels == 9
        self.config = config
        self.controlnet = controlnet
        self.device = torch.device(device)
        self.step_callback = step_callback
        self.components["scheduler"] = make_scheduler(self.components["scheduler"].config, config.sampler, config.scheduler)
        for v in (*self.components.values(), controlnet):
            if isinstance(v, torch.nn.Module):
                v.to(self.device)
        self._pipes: dict[tuple[bool, bool], object] = {}
        self.calls: list[tuple[str, str, str, int]] = []

    def pipeline(self, control: bool, masked: bool):
        """The (cached) pipeline for a request kind; all share the same components."""
        key = (control, masked)
        if key not in self._pipes:
            diffusers = require_diffusers()
            cls = getattr(diffusers, _PIPELINES[(self.sdxl, control, masked)])
            accepted = inspect.signature(cls.__init__).parameters
            parts = {k: v for k, v in self.components.items() if k in accepted}
            if control:
                parts["controlnet"] = self.controlnet
            for optional in ("safety_checker", "feature_extractor", "image_encoder"):
                if optional in accepted and optional not in parts:
                    parts[optional] = None
            if "requires_safety_checker" in accepted:
                parts["requires_safety_checker"] = False
            pipe = cls(**parts)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[key] = pipe
        return self._pipes[key]

    def __call__(self, req: SampleRequest) -> Tensor:
        cfg = self.config
        control = self.controlnet is not None and req.hint is not None and cfg.control_strength > 0
        masked = req.mask is not None or self.inpainting_unet
        pipe = self.pipeline(control, masked)
        h, w = req.image.shape[1:3]
        kwargs: dict = {
            "prompt": req.prompt,
            "negative_prompt": req.negative,
            "image": req.image.movedim(-1, 1).float(),
            "strength": float(cfg.denoise),
            "num_inference_steps": img2img_steps(cfg.steps, cfg.denoise),
            "guidance_scale": float(cfg.cfg),
            "generator": torch.Generator("cpu").manual_seed(int(req.seed)),
            "output_type": "pt",
        }
        if control:
            kwargs["control_image"] = req.hint.movedim(-1, 1).float()
            kwargs["controlnet_conditioning_scale"] = float(cfg.control_strength)
        if masked:
            mask = req.mask if req.mask is not None else torch.ones(req.image.shape[:3])
            kwargs["mask_image"] = mask[:, None].float()
        params = inspect.signature(pipe.__call__).parameters
        if "height" in params:
            kwargs["height"], kwargs["width"] = int(h), int(w)
        if self.step_callback is not None:
            user = self.step_callback

            def on_step(pipeline, step, timestep, tensors):
                user()
                return tensors

            kwargs["callback_on_step_end"] = on_step
        self.calls.append((type(pipe).__name__, req.prompt, req.negative, int(req.seed)))
        with torch.inference_mode():
            out = pipe(**kwargs).images
        if out.shape[-2:] != (h, w):
            out = torch.nn.functional.interpolate(out, size=(h, w), mode="bicubic", align_corners=False)
        return out.movedim(1, -1).float().clamp(0, 1).cpu()


def load_components(
    model: str | Path,
    *,
    config_dir: str | Path | None = None,
    sdxl: bool = False,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Load SD1.5/SDXL components offline.

    Args:
        model: a diffusers model folder (``model_index.json``) or a single-file checkpoint
            (``.safetensors``/``.ckpt``).
        config_dir: for a single file: a local diffusers config folder of the same architecture (the JSON/TXT
            files of e.g. ``stable-diffusion-v1-5/stable-diffusion-v1-5``); required, never downloaded.
        sdxl: the single file is an SDXL checkpoint (a folder says so itself).
        dtype: model dtype (float32 on CPU; never float16 on CPU).

    Returns:
        the pipeline's ``components`` dict.
    """
    diffusers = require_diffusers()
    model = Path(model)
    if model.is_dir():
        pipe = diffusers.DiffusionPipeline.from_pretrained(
            model, local_files_only=True, safety_checker=None, **dtype_argument(diffusers, dtype)
        )
        return dict(pipe.components)
    if not model.is_file():
        raise FileNotFoundError(f"diffusion model not found: {model} (a diffusers folder or a .safetensors file)")
    if config_dir is None or not Path(config_dir).is_dir():
        raise ValueError(
            f"single-file checkpoint {model.name} needs config_dir: a local diffusers config folder of the same "
            "architecture (model_index.json, */config.json, tokenizer files); it is never downloaded"
        )
    cls = diffusers.StableDiffusionXLPipeline if sdxl else diffusers.StableDiffusionPipeline
    pipe = cls.from_single_file(
        str(model), config=str(config_dir), local_files_only=True, safety_checker=None,
        **dtype_argument(diffusers, dtype),
    )
    return dict(pipe.components)


def load_controlnet(path: str | Path, *, config_dir: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """Load a ControlNet offline from a diffusers folder or a single file (+ its local config folder)."""
    diffusers = require_diffusers()
    path = Path(path)
    if path.is_dir():
        return diffusers.ControlNetModel.from_pretrained(path, local_files_only=True,
                                                         **dtype_argument(diffusers, dtype))
    if not path.is_file():
        raise FileNotFoundError(f"ControlNet not found: {path}")
    if config_dir is None or not Path(config_dir).is_dir():
        raise ValueError(f"single-file ControlNet {path.name} needs config_dir (a local diffusers config folder)")
    return diffusers.ControlNetModel.from_single_file(
        str(path), config=str(config_dir), local_files_only=True, **dtype_argument(diffusers, dtype)
    )
