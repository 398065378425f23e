"""Write a tiny random Stable Diffusion 1.5 checkpoint that ComfyUI's own loader detects as SD 1.5 (tests only).

Run with a ComfyUI venv's python, from (and with ``PYTHONPATH``) its ComfyUI folder: ``python _tiny_sd15.py OUT``.
The UNet is ComfyUI's own class with SD 1.5's widths (320 channels, 768-wide text context, so ComfyUI's detection
picks SD 1.5) but one level with one res block (26 M parameters instead of 860 M); the text encoder (CLIP ViT-L/14's
text tower, ComfyUI's fixed SD 1.5 config) and the VAE (ComfyUI's fixed SD VAE config) have their real sizes,
because ComfyUI builds those from fixed configs. All weights are random (seed 0), fp16: about 465 MB. It exercises
loading, prompt encoding, VAE encode/decode and sampling through ComfyUI's real code paths; it paints noise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(sys.argv[1])
sys.argv = [sys.argv[0], "--cpu"]  # comfy.model_management reads ComfyUI's command line on import

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()

import comfy.ops  # noqa: E402
import torch  # noqa: E402
from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402


def init(v: torch.Tensor, name: str) -> torch.Tensor:
    """ComfyUI's layers skip weight init: norm weights 1, other vectors 0, matrices and kernels ~ N(0, 1/fan_in)."""
    if v.dim() == 1:
        return torch.ones_like(v) if name.endswith("weight") and "norm" in name else torch.zeros_like(v)
    return torch.randn_like(v) / v[0].numel() ** 0.5


def main() -> None:
    torch.manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
                     channel_mult=[1], num_heads=8, use_spatial_transformer=True, transformer_depth=[1],
                     transformer_depth_output=[1, 1], transformer_depth_middle=1, context_dim=768,
                     use_linear_in_transformer=False, operations=comfy.ops.manual_cast, dtype=torch.float32,
                     device="cpu")
    sd.update({"model.diffusion_model." + k: init(v, k) for k, v in unet.state_dict().items()})
    config = json.loads((Path(comfy.ops.__file__).parent / "sd1_clip_config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")}
    clip = CLIPTextModel(CLIPTextConfig(**config))
    sd.update({"cond_stage_model.transformer." + k: v for k, v in clip.state_dict().items()})
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    sd.update({"first_stage_model." + k: init(v, k) for k, v in vae.state_dict().items()})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_name(OUT.name + ".partial")
    save_file({k: v.detach().half().contiguous() for k, v in sd.items()}, str(tmp))
    tmp.replace(OUT)


if __name__ == "__main__":
    main()
