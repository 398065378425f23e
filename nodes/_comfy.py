"""The only module of the pack that touches ComfyUI internals.

Every other node module imports ComfyUI services from here, so the pack degrades cleanly (and tests can run)
when ComfyUI modules are absent: ``folder_paths``, ``comfy.model_management`` and ``comfy.utils`` are imported
lazily and each helper has a plain fallback.

Tensor layouts: ComfyUI IMAGE is ``float32 [B,H,W,3]`` RGB in [0,1]; MASK is ``float32 [B,H,W]`` in [0,1].
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

MODEL_FOLDER = "cartoonseg"
CATEGORY = "CartoonSeg"


def register_model_folder() -> None:
    """Register ``models/cartoonseg`` with folder_paths, keeping entries users added (extra_model_paths.yaml)."""
    try:
        import folder_paths
    except ImportError:
        return
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    known = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    if known is None:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = (
            [default],
            {".ckpt", ".pth", ".pt", ".safetensors", ".bin"},
        )
    else:
        paths, exts = known[0], known[1]
        if default not in paths:
            paths.append(default)
        if isinstance(exts, set):
            exts.update({".ckpt", ".pth", ".pt", ".safetensors", ".bin"})


def model_dirs() -> list[str]:
    """Folders searched for cartoonseg weights (first one is where downloads go)."""
    try:
        import folder_paths
    except ImportError:
        return [os.path.join(os.getcwd(), "models", MODEL_FOLDER)]
    register_model_folder()
    return list(folder_paths.get_folder_paths(MODEL_FOLDER))


def list_model_files() -> list[str]:
    try:
        import folder_paths
    except ImportError:
        return []
    register_model_folder()
    return sorted(folder_paths.get_filename_list(MODEL_FOLDER))


def model_file_path(name: str) -> str | None:
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths.get_full_path(MODEL_FOLDER, name)


def torch_device() -> torch.device:
    try:
        import comfy.model_management as mm
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return mm.get_torch_device()


def offload_device() -> torch.device:
    try:
        import comfy.model_management as mm
    except ImportError:
        return torch.device("cpu")
    return mm.unet_offload_device()


def soft_empty_cache() -> None:
    """Release cached accelerator memory after models were moved off the GPU (no-op outside ComfyUI/CUDA)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return
    mm.soft_empty_cache()


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


class _NullBar:
    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0

    def update(self, value: int) -> None:
        self.current += value

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        self.current = value


def progress_bar(total: int):
    """ComfyUI's ProgressBar (shown on the node), or a silent stand-in outside ComfyUI."""
    try:
        from comfy.utils import ProgressBar
    except ImportError:
        return _NullBar(total)
    return ProgressBar(total)


@contextmanager
def steps(total: int) -> Iterator:
    """Progress over ``total`` steps; each ``tick()`` checks for cancel, advances the bar and checks again, so a
    Cancel pressed while a unit (frame, instance batch, ...) ran stops the node before the next unit starts."""
    bar = progress_bar(total)

    class _Ticker:
        def tick(self) -> None:
            throw_if_interrupted()
            bar.update(1)
            throw_if_interrupted()  # pressed while the bar's UI update ran

    throw_if_interrupted()
    yield _Ticker()


def image_to_uint8(frame: torch.Tensor):
    """One ComfyUI frame ``[H,W,C]`` float in [0,1] -> numpy uint8 ``[H,W,3]`` RGB (alpha dropped, grey expanded,
    NaN -> 0: the policy of :func:`cartoonseg.io.to_rgb_uint8`)."""
    from cartoonseg.io import to_rgb_uint8

    if frame.dim() != 3:
        raise ValueError(f"expected one IMAGE frame [H,W,C], got shape {tuple(frame.shape)}")
    if frame.shape[-1] not in (1, 3, 4):
        raise ValueError(f"IMAGE must have 1, 3 or 4 channels, got {frame.shape[-1]}")
    return to_rgb_uint8(frame, nan="zero")


def check_image(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """Validate a ComfyUI IMAGE batch and return it as float32 ``[B,H,W,3]`` on the CPU.

    Grey (1 channel) is expanded, alpha dropped; NaN becomes 0 and values outside [0,1] (±Inf included) are
    clamped, so one bad pixel does not stop a graph. Empty or oversized frames raise ValueError.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a ComfyUI IMAGE tensor [B,H,W,3], got {type(image).__name__}")
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name} must be an IMAGE [B,H,W,3], got shape {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}")
    from cartoonseg.io import MAX_PIXELS

    if image.shape[1] * image.shape[2] > MAX_PIXELS:  # before any copy of a huge batch
        raise ValueError(f"{name} frames of {image.shape[2]}x{image.shape[1]} pixels exceed the {MAX_PIXELS}-pixel "
                         "limit; downscale first")
    if image.shape[-1] == 1:
        image = image.expand(-1, -1, -1, 3)
    image = image[..., :3]
    return torch.nan_to_num(image.float().cpu(), nan=0.0).clamp(0, 1)


def check_mask(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Validate a ComfyUI MASK and return it as float32 ``[B,H,W]`` on the CPU."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a ComfyUI MASK tensor [B,H,W], got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.dim() != 3:
        raise ValueError(f"{name} must be a MASK [B,H,W], got shape {tuple(mask.shape)}")
    return torch.nan_to_num(mask.float().cpu(), nan=0.0).clamp(0, 1)


# ---------------------------------------------------------------- diffusion sampling (core ComfyUI API)
# Used by nodes that sample inside themselves (style editing), the way Impact's detailers do: the same calls as
# core CLIPTextEncode / ControlNetApplyAdvanced / VAEEncode / KSampler / VAEDecode, imported lazily.

FALLBACK_SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "ddim")
FALLBACK_SCHEDULERS = ("normal", "karras", "exponential", "simple")


def sampler_choices() -> tuple[list[str], list[str]]:
    """(sampler names, scheduler names) of the running ComfyUI; a short fallback list outside ComfyUI."""
    try:
        import comfy.samplers
    except ImportError:
        return list(FALLBACK_SAMPLERS), list(FALLBACK_SCHEDULERS)
    return list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)


def encode_text(clip, text: str) -> list:
    """CONDITIONING of ``text`` (core CLIPTextEncode)."""
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):
        return clip.encode_from_tokens_scheduled(tokens)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def apply_control_net(positive: list, negative: list, control_net, hint: torch.Tensor, strength: float, vae=None):
    """Attach ``control_net`` with ``hint`` (IMAGE ``[B,H,W,3]``) to both conditionings over the whole schedule
    (core ControlNetApplyAdvanced, start 0 / end 1). Returns ``(positive, negative)``."""
    import inspect

    if strength == 0:
        return positive, negative
    control_hint = hint.movedim(-1, 1)
    accepts_vae = "vae" in inspect.signature(control_net.set_cond_hint).parameters
    made: dict = {}
    out = []
    for conditioning in (positive, negative):
        c = []
        for t in conditioning:
            d = t[1].copy()
            prev = d.get("control", None)
            if prev not in made:
                kwargs = {"vae": vae} if accepts_vae else {}
                c_net = control_net.copy().set_cond_hint(control_hint, strength, (0.0, 1.0), **kwargs)
                c_net.set_previous_controlnet(prev)
                made[prev] = c_net
            d["control"] = made[prev]
            d["control_apply_to_uncond"] = False
            c.append([t[0], d])
        out.append(c)
    return out[0], out[1]


def img2img(model, vae, positive, negative, pixels: torch.Tensor, *, seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str, denoise: float, noise_mask: torch.Tensor | None = None) -> torch.Tensor:
    """VAE-encode ``pixels [B,h,w,3]``, sample (core KSampler semantics; ``noise_mask [B,h,w]`` as
    SetLatentNoiseMask), decode. Cancel is checked at every sampler step. Returns IMAGE ``[B,h,w,3]``."""
    import comfy.sample

    latent = vae.encode(pixels[..., :3])
    if hasattr(comfy.sample, "fix_empty_latent_channels"):
        latent = comfy.sample.fix_empty_latent_channels(model, latent)
    noise = comfy.sample.prepare_noise(latent, seed, None)

    def callback(step, x0, x, total_steps):
        throw_if_interrupted()

    samples = comfy.sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
        denoise=denoise, noise_mask=noise_mask, callback=callback, disable_pbar=True, seed=seed,
    )
    images = vae.decode(samples)
    if images.dim() == 5:  # video VAEs return [B,T,H,W,C]
        images = images.reshape(-1, *images.shape[-3:])
    return images[..., :3].float().cpu()
