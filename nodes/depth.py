"""ComfyUI nodes: depth estimation (Depth Anything V2) and per-instance depth pooling.

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943) §6.1: each character becomes
one depth layer (the paper pools the mean depth inside each instance; the released code used the disparity at the
character's feet). The work is done by ``cartoonseg.depth``.

Depth maps travel between nodes as IMAGE ``[B,H,W,3]`` grey in [0,1], **larger = nearer** (the convention of
ComfyUI depth preprocessors), so a depth IMAGE from any other pack (controlnet_aux, DepthAnythingV2 nodes, ...)
can feed ``CartoonSegDepthPool`` directly; it is resized to the instance masks when sizes differ.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import partial

import torch

from cartoonseg.depth.pooling import POOL_MODES
from cartoonseg.device import PRECISIONS

from . import _comfy

CATEGORY = f"{_comfy.CATEGORY}/depth"
DEPTH_SUBFOLDER = "depth"
# display name -> key of cartoonseg.depth.DEPTH_MODELS. The names are node-only and stay literal: saved workflows
# hold them as widget values (a test checks the keys are DEPTH_MODELS's).
PUBLISHED = {
    "Depth-Anything-V2-Small-hf (Apache-2.0)": "small",
    "Depth-Anything-V2-Base-hf (CC-BY-NC-4.0, non-commercial)": "base",
    "Depth-Anything-V2-Large-hf (CC-BY-NC-4.0, non-commercial)": "large",
    "zoedepth-nyu-kitti (ZoeDepth, MIT)": "zoedepth",
    "marigold-depth-lcm-v1-0 (Marigold LCM, the original's; needs diffusers)": "marigold-lcm",
    "marigold-depth-v1-1 (Marigold, OpenRAIL++-M; needs diffusers)": "marigold",
}
LOADER_CATEGORY = f"{_comfy.CATEGORY}/loaders"


def _depth_dirs() -> list[str]:
    return [os.path.join(d, DEPTH_SUBFOLDER) for d in _comfy.model_dirs()]


def _local_models() -> list[str]:
    """Sub-folders of ``models/cartoonseg/depth`` holding a depth model (transformers layout, or a diffusers Marigold
    pipeline), by folder name."""
    found = []
    for d in _depth_dirs():
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            transformers_layout = all(os.path.isfile(os.path.join(p, f)) for f in ("config.json", "model.safetensors"))
            if transformers_layout or os.path.isfile(os.path.join(p, "model_index.json")):
                found.append(name)
    return found


def _read_depth_model(folder: str, precision: str, device: torch.device):
    """The depth model of ``folder`` read onto the CPU, its weights in the precision it will run in on ``device``
    (resolved by ``cartoonseg.device``: what the device cannot run falls back to fp32 with one warning)."""
    from cartoonseg.depth import load_depth_model
    from cartoonseg.device import PrecisionFallbackWarning, resolve_dtype

    dtype = resolve_dtype(precision, device)
    if device.type == "cpu" and dtype == torch.float16:
        # the library refuses fp16 on the CPU (far slower than fp32, even where the CPU has fp16 kernels); a workflow
        # saved on a GPU still runs here, in fp32, as on a CPU without them
        warnings.warn("fp16 depth on the CPU is far slower than fp32; running in fp32 instead", PrecisionFallbackWarning,
                      stacklevel=2)
        dtype = torch.float32
    if device.type == "cpu":  # reduced precision on CPU is autocast, with fp32 weights
        return load_depth_model(folder, device="cpu", dtype=dtype, allow_download=False)
    estimator = load_depth_model(folder, device="cpu", dtype=torch.float32, allow_download=False)
    if dtype != torch.float32:
        estimator.model.to(dtype)
        estimator.dtype = dtype
    return estimator


class CartoonSegDepthLoader:
    """Load a depth model: Depth Anything V2 (Small is Apache-2.0; Base/Large are non-commercial CC-BY-NC-4.0),
    ZoeDepth (MIT) or Marigold (diffusers)."""

    DESCRIPTION = (
        "Loads a depth model from ComfyUI/models/cartoonseg/depth/<repo name>, downloading it from the Hugging Face "
        "hub when missing and allowed (HF_HUB_OFFLINE is respected). Depth Anything V2 Small (Apache-2.0, the "
        "default, fast) suits most images; Base and Large are CC-BY-NC-4.0 (non-commercial use only). ZoeDepth "
        "(MIT) is the original's metric-depth option; Marigold (diffusion based, slow on CPU, needs diffusers) gives "
        "the sharpest edges. The weights are read when a node first needs them and belong to ComfyUI's model "
        "management (see the segmentation loader's description for when they are freed)."
    )
    RETURN_TYPES = ("CARTOONSEG_DEPTH_MODEL",)
    RETURN_NAMES = ("depth_model",)
    OUTPUT_TOOLTIPS = ("the depth model, for Estimate Depth",)
    FUNCTION = "load"
    CATEGORY = LOADER_CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        local = [m for m in _local_models() if m not in {k.split(" ")[0] for k in PUBLISHED}]
        return {
            "required": {
                "model": (list(PUBLISHED) + local, {
                    "default": next(iter(PUBLISHED)),
                    "tooltip": "a published depth model (downloaded into models/cartoonseg/depth when missing) or a "
                               "model folder found there"}),
                "precision": (list(PRECISIONS), {"default": "fp32",
                                                 "tooltip": "bf16/fp16 halve the memory where the device runs them "
                                                            "(else fp32, with a warning); fp32 is the reference"}),
                "auto_download": ("BOOLEAN", {"default": True,
                                              "tooltip": "fetch a missing published model from Hugging Face"}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, model, **_):
        """Path, size and mtime of the model folder's files: replaced files re-run the loader (no download here)."""
        return _comfy.loader_fingerprint(lambda: [cls._folder(model, False)])

    @staticmethod
    def _folder(model: str, allow: bool) -> str:
        """The model's folder (downloaded when missing and ``allow``)."""
        from cartoonseg.depth import resolve_depth_model

        dirs = _depth_dirs()
        found = _comfy.find_in_model_dirs(model, DEPTH_SUBFOLDER, folder=True, what="depth model")  # never outside
        local = [found] if found else []
        if not local and model not in PUBLISHED and model not in PUBLISHED.values():
            raise ValueError(f"depth model {model!r} is neither a folder in {', '.join(dirs)} nor a published model "
                             f"({', '.join(sorted(PUBLISHED))})")
        return str(resolve_depth_model(local[0] if local else PUBLISHED.get(model, model), search_dirs=dirs,
                                       allow_download=allow))

    def load(self, model: str, precision: str = "fp32", auto_download: bool = True):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        allow = bool(auto_download) and os.environ.get("CARTOONSEG_NO_DOWNLOAD", "") in ("", "0")
        folder = self._folder(model, allow)
        device = torch.device(_comfy.torch_device())
        holder = _comfy.ModelHolder(partial(_read_depth_model, str(folder), precision, device),
                                    name=f"depth model {os.path.basename(folder)}", device=device,
                                    network=lambda estimator: estimator.model, files=(folder,))
        return (holder,)


def _check_depth_model(model) -> _comfy.ModelHolder:
    if not isinstance(model, _comfy.ModelHolder):
        raise TypeError(f"depth_model must be a CARTOONSEG_DEPTH_MODEL from Load Depth Model, got {type(model).__name__}")
    return model


class CartoonSegDepthEstimate:
    """Relative depth of each frame as a grey IMAGE (larger = nearer) and the same values as a MASK."""

    DESCRIPTION = (
        "Estimates relative depth per frame. Output IMAGE is grey in [0,1] with larger = nearer (disparity-like, "
        "normalised per frame), the convention of ComfyUI depth preprocessors; the MASK output holds the same values."
    )
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("depth", "depth_mask")
    OUTPUT_TOOLTIPS = ("grey depth per frame, larger = nearer", "the same depth values as a MASK")
    FUNCTION = "estimate"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "depth_model": ("CARTOONSEG_DEPTH_MODEL", {"tooltip": "from Load Depth Model"}),
            "image": ("IMAGE", {"tooltip": "frames to estimate depth for"}),
        }}

    def estimate(self, depth_model, image):
        from cartoonseg.depth import depth_to_image

        holder = _check_depth_model(depth_model)
        image = _comfy.check_image(image)
        frames = []
        with holder.on_device() as model, _comfy.steps(image.shape[0]) as bar:
            for frame in image:
                frames.append(model(frame).disparity)
                bar.tick()
        disp = torch.stack(frames)
        return (torch.stack([depth_to_image(d) for d in disp]), disp.clone())


class CartoonSegDepthPool:
    """Flatten the depth inside every instance to one value (one depth layer per character) and z-order them."""

    DESCRIPTION = (
        "Per instance, replaces the depth inside its mask by one value: mean (the paper), median, or feet (the "
        "original code: max disparity over the bottom 3% of the instance). Overlaps go to the nearest instance. "
        "Outputs the adjusted depth IMAGE, the instances sorted back to front (far to near) with "
        "extras['depth'] set, and the per-instance values as JSON."
    )
    RETURN_TYPES = ("IMAGE", "CARTOONSEG_INSTANCES", "STRING")
    RETURN_NAMES = ("depth", "instances_back_to_front", "depth_values_json")
    OUTPUT_TOOLTIPS = (
        "the depth with each instance flattened to one layer (grey, larger = nearer)",
        "the instances sorted far to near, each with its depth value",
        "per-instance depth values and z order as JSON",
    )
    FUNCTION = "pool"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "depth": ("IMAGE", {"tooltip": "grey depth, larger = nearer (Estimate Depth or any depth "
                                               "preprocessor); resized to the instances"}),
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "from Segment"}),
                "mode": (list(POOL_MODES), {"default": "mean",
                                            "tooltip": "value per instance: mean (the paper), median, or feet (the "
                                                       "original code: nearest depth at the bottom of the instance)"}),
                "blend": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                    "tooltip": "1 = flat layer per instance; 0 = keep the estimated depth"}),
                "feet_fraction": ("FLOAT", {"default": 0.03, "min": 0.0, "max": 1.0, "step": 0.01,
                                            "tooltip": "feet mode: bottom share of the instance's height used"}),
                "soft_edges": ("BOOLEAN", {"default": False,
                                           "tooltip": "blend by the soft mask at instance edges (else hard masks)"}),
                "resolve_overlaps": ("BOOLEAN", {"default": True,
                                                 "tooltip": "where instances overlap, the nearer one wins"}),
            }
        }

    def pool(self, depth, instances, mode="mean", blend=1.0, feet_fraction=0.03, soft_edges=False, resolve_overlaps=True):
        from cartoonseg.depth import depth_to_image, disparity_from_image, pool_instance_depth, z_order_instances

        depth = _comfy.check_image(depth, "depth")
        frames = _comfy.check_instances(instances)
        n = max(depth.shape[0], len(frames))
        _comfy.check_batches(n, "the batch", depth=depth.shape[0], instances=len(frames))
        out_depth, out_inst, records = [], [], []
        with _comfy.steps(n) as bar:
            for b in range(n):
                inst = _comfy.pick(frames, b)
                d = disparity_from_image(_comfy.pick(depth, b), inst.image_size)
                pooled = pool_instance_depth(d, inst, mode=mode, blend=blend, feet_fraction=feet_fraction,
                                             soft=soft_edges, resolve_overlaps=resolve_overlaps)
                ordered = z_order_instances(inst, pooled)
                out_depth.append(depth_to_image(pooled.depth))
                out_inst.append(ordered)
                records.append([
                    {"index": int(i), "id": int(inst.ids[i]),
                     "depth": (round(float(pooled.values[i]), 6) if bool(pooled.valid[i]) else None),
                     "z": z}
                    for z, i in enumerate(pooled.order.tolist())
                ])
                bar.tick()
        sizes = {tuple(t.shape) for t in out_depth}
        if len(sizes) != 1:
            raise ValueError(f"frames have different instance sizes {sorted(sizes)}; cannot batch the depth IMAGE")
        return (torch.stack(out_depth), out_inst, json.dumps(records if n > 1 else records[0]))


NODE_CLASS_MAPPINGS = {
    "CartoonSegDepthLoader": CartoonSegDepthLoader,
    "CartoonSegDepthEstimate": CartoonSegDepthEstimate,
    "CartoonSegDepthPool": CartoonSegDepthPool,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CartoonSegDepthLoader": "Load Depth Model (CartoonSeg)",
    "CartoonSegDepthEstimate": "Estimate Depth (CartoonSeg)",
    "CartoonSegDepthPool": "Pool Instance Depth (CartoonSeg)",
}
