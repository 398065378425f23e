"""ComfyUI nodes for per-instance booru tagging (WD SwinV2 v3 in pure PyTorch) and tagger-prompt merging.

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943) §6.1/§6.2: per-instance
SwinV2-tagger tags steer the Ken Burns inpainting and the instance-level style translation. The library side is
:mod:`cartoonseg.tagger`; these nodes only adapt ComfyUI types:

* ``CartoonSegTaggerLoader`` -> ``CARTOONSEG_TAGGER`` (a folder laid out like the Hugging Face repo, under
  ``models/cartoonseg/tagger/<name>/``; ``SmilingWolf/wd-swinv2-tagger-v3`` is downloaded there when missing);
* ``CartoonSegTagInstances``: IMAGE + ``CARTOONSEG_INSTANCES`` -> instances with ``extras["tags"]``,
  ``extras["character_tags"]``, ``extras["rating"]``, a STRING list of tags per instance and the background tags;
* ``CartoonSegMergePrompts``: style prompt + tags -> per-instance prompts (also in ``extras["prompt"]``), the Ken
  Burns background prompt, the paper's negative prompt and an Impact Detailer ``[LAB]`` wildcard;
* ``CartoonSegInstanceConditioning``: CLIP + instances (with prompts) -> one CONDITIONING where each prompt is
  masked to its instance (core ``ConditioningSetMask`` semantics) plus the background prompt, for a plain KSampler.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from . import _comfy

CATEGORY = f"{_comfy.CATEGORY}/tagger"
DEFAULT_REPO = "SmilingWolf/wd-swinv2-tagger-v3"
TAGGER_SUBDIR = "tagger"
DEVICES = ("auto", "cpu")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
BACKGROUND_AREAS = ("outside instances", "whole image")
COND_AREAS = ("default", "mask bounds")
DEFAULT_EXCLUDE = "simple_background, white_background"
BACKGROUND_SUFFIX = "high quality, masterpiece, no_humans"


class CartoonSegTagger:
    """The ``CARTOONSEG_TAGGER`` payload: a :class:`cartoonseg.tagger.WDTagger` and where to run it.

    The network waits on :attr:`offload_device` and moves to :attr:`device` only while a node tags
    (:meth:`on_device`).
    """

    def __init__(self, tagger, *, device, offload_device, path: str = "") -> None:
        self.tagger = tagger
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.path = str(path)

    @contextmanager
    def on_device(self) -> Iterator:
        self.tagger.to(self.device)
        try:
            yield self.tagger
        finally:
            if self.offload_device != self.device:
                self.tagger.to(self.offload_device)
                _comfy.soft_empty_cache()

    def __repr__(self) -> str:
        return f"CartoonSegTagger({os.path.basename(self.path)!r}, device={self.device})"


# ---------------------------------------------------------------------------------------------- helpers
def tagger_dirs() -> list[str]:
    """``<cartoonseg model folder>/tagger`` for every registered cartoonseg model folder."""
    return [os.path.join(d, TAGGER_SUBDIR) for d in _comfy.model_dirs()]


def tagger_choices() -> list[str]:
    """The default repo id, then every ``tagger/<name>`` folder with ``model.safetensors`` and ``selected_tags.csv``."""
    out = [DEFAULT_REPO]
    for base in tagger_dirs():
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            folder = os.path.join(base, name)
            if all(os.path.isfile(os.path.join(folder, f)) for f in ("model.safetensors", "selected_tags.csv")):
                if name not in out:
                    out.append(name)
    return out


def resolve_tagger_folder(choice: str, allow_download: bool) -> str:
    """Folder of a loader choice: an absolute folder, a folder name under ``models/cartoonseg/tagger`` or a repo id
    (looked up as ``tagger/<repo name>``, else downloaded there when allowed)."""
    from cartoonseg.tagger import resolve_tagger_dir

    if not isinstance(choice, str) or not choice.strip():
        raise ValueError(f"tagger must be a folder name or a Hugging Face repo id, got {choice!r}")
    if os.path.isabs(choice) and os.path.isdir(choice):
        return str(resolve_tagger_dir(choice))
    name = choice.split("/")[-1]
    for base in tagger_dirs():
        folder = os.path.join(base, name)
        if os.path.isdir(folder) and os.path.isfile(os.path.join(folder, "model.safetensors")):
            return str(resolve_tagger_dir(folder))
    allow = bool(allow_download) and os.environ.get("CARTOONSEG_NO_DOWNLOAD", "") in ("", "0")
    return str(resolve_tagger_dir(choice, download_dir=tagger_dirs()[0], allow_download=allow))


def check_tagger(tagger) -> CartoonSegTagger:
    if not isinstance(tagger, CartoonSegTagger):
        raise TypeError(f"tagger must be a CARTOONSEG_TAGGER from CartoonSegTaggerLoader, got {type(tagger).__name__}")
    return tagger


def check_instances(instances, name: str = "instances") -> list:
    """Validate a ``CARTOONSEG_INSTANCES`` value (a list of ``cartoonseg.Instances``, one per frame)."""
    from cartoonseg import Instances

    if isinstance(instances, Instances):
        instances = [instances]
    if not isinstance(instances, (list, tuple)) or not instances:
        raise TypeError(f"{name} must be a non-empty CARTOONSEG_INSTANCES list, got {type(instances).__name__}")
    for i, frame in enumerate(instances):
        if not isinstance(frame, Instances):
            raise TypeError(f"{name}[{i}] must be cartoonseg.Instances, got {type(frame).__name__}")
    return list(instances)


def frame_of(batch: torch.Tensor, index: int, name: str) -> torch.Tensor:
    """Frame ``index`` of an IMAGE batch; a single frame is shared by all."""
    if batch.shape[0] == 1:
        return batch[0]
    if index >= batch.shape[0]:
        raise ValueError(f"{name} has {batch.shape[0]} frames but frame {index} is needed")
    return batch[index]


def pick_frame(frames: list, frame: int) -> int:
    if not -len(frames) <= int(frame) < len(frames):
        raise ValueError(f"frame {frame} out of range for {len(frames)} frames of instances")
    return int(frame) % len(frames)


def prompt_options(template, drop_character_tags, exclude_tags, underscores_to_spaces, escape_parentheses, max_tags):
    from cartoonseg.tagger import PromptOptions

    return PromptOptions(template=str(template), drop_character_tags=bool(drop_character_tags),
                         exclude=str(exclude_tags or ""), underscores_to_spaces=bool(underscores_to_spaces),
                         escape_parentheses=bool(escape_parentheses), max_tags=int(max_tags))


def encode_text(clip, text: str) -> list:
    """CONDITIONING of ``text`` with ComfyUI's CLIP object (the calls of core CLIPTextEncode)."""
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):
        return clip.encode_from_tokens_scheduled(tokens)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def set_mask(conditioning: list, mask: torch.Tensor, strength: float, set_cond_area: str) -> list:
    """Core ``ConditioningSetMask``: copy every ``[cond, options]`` with ``mask`` ``[1,H,W]``, its strength and area."""
    if set_cond_area not in COND_AREAS:
        raise ValueError(f"set_cond_area must be one of {COND_AREAS}, got {set_cond_area!r}")
    values = {"mask": mask, "set_area_to_bounds": set_cond_area != "default", "mask_strength": float(strength)}
    return [[c[0], {**c[1], **values}] for c in conditioning]


# ---------------------------------------------------------------------------------------------- nodes
class CartoonSegTaggerLoader:
    DESCRIPTION = (
        "Loads the WD SwinV2 v3 booru tagger (SmilingWolf/wd-swinv2-tagger-v3, pure PyTorch, no onnxruntime) from "
        "models/cartoonseg/tagger/<name>/ (model.safetensors + selected_tags.csv + config.json, as in the Hugging "
        "Face repo). The default repo is downloaded there on first use when auto_download is on (HF_HUB_OFFLINE=1 "
        "or CARTOONSEG_NO_DOWNLOAD=1 forbid it; the error names the URL and the folder)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("CARTOONSEG_TAGGER",)
    RETURN_NAMES = ("tagger",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tagger": (tagger_choices(), {"default": DEFAULT_REPO,
                                              "tooltip": "folder under models/cartoonseg/tagger, or the HF repo"}),
                "device": (list(DEVICES), {"default": "auto", "tooltip": "auto = ComfyUI's device (GPU if any)"}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": "auto = fp16 on CUDA, bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32; a precision the device cannot run falls back to fp32 with a warning"}),
                "auto_download": ("BOOLEAN", {"default": True, "tooltip": "fetch the missing default tagger"}),
            }
        }

    def load(self, tagger, device, precision, auto_download):
        from cartoonseg.device import resolve_precision
        from cartoonseg.tagger import load_tagger

        if device not in DEVICES or precision not in PRECISIONS:
            raise ValueError(f"device must be one of {DEVICES} and precision one of {PRECISIONS}")
        dev = torch.device(_comfy.torch_device()) if device == "auto" else torch.device("cpu")
        prec = resolve_precision(precision, dev)
        folder = resolve_tagger_folder(tagger, auto_download)
        offload = torch.device("cpu") if dev.type == "cpu" else torch.device(_comfy.offload_device())
        model = load_tagger(folder, device=offload, precision=prec, run_device=dev)
        return (CartoonSegTagger(model, device=dev, offload_device=offload, path=folder),)


class CartoonSegTagInstances:
    DESCRIPTION = (
        "Booru tags per instance, as in the paper's code: each instance is cropped by its box with the pixels outside "
        "its mask painted white, then tagged (general/character thresholds, optional MCut; ratings kept apart in "
        "extras['rating']). The background (the optional inpainted plate, else the image with all instances painted "
        "white) is tagged as its own 'instance'. Outputs the instances with extras['tags'], one tag string per "
        "instance (all frames in order) and the background tags (one line per frame)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "tag"
    RETURN_TYPES = ("CARTOONSEG_INSTANCES", "STRING", "STRING")
    RETURN_NAMES = ("instances", "tags", "background_tags")
    OUTPUT_IS_LIST = (False, True, False)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tagger": ("CARTOONSEG_TAGGER",),
                "image": ("IMAGE",),
                "instances": ("CARTOONSEG_INSTANCES",),
                "general_threshold": ("FLOAT", {"default": 0.35, "min": 0.0, "max": 1.0, "step": 0.01}),
                "character_threshold": ("FLOAT", {"default": 0.85, "min": 0.0, "max": 1.0, "step": 0.01}),
                "general_mcut": ("BOOLEAN", {"default": False, "tooltip": "MCut threshold for general tags"}),
                "character_mcut": ("BOOLEAN", {"default": False,
                                               "tooltip": "MCut threshold for characters (at least 0.15)"}),
                "exclude_tags": ("STRING", {"default": DEFAULT_EXCLUDE, "multiline": False,
                                            "tooltip": "comma-separated tags never reported (underscore form)"}),
                "tag_background": ("BOOLEAN", {"default": True}),
            },
            "optional": {
                "background": ("IMAGE", {"tooltip": "inpainted background plate to tag instead of the masked image"}),
            },
        }

    def tag(self, tagger, image, instances, general_threshold, character_threshold, general_mcut, character_mcut,
            exclude_tags, tag_background, background=None):
        from cartoonseg.tagger import PromptOptions, format_tags, parse_tag_list, tag_instances

        handle = check_tagger(tagger)
        frames = check_instances(instances)
        image = _comfy.check_image(image)
        if image.shape[0] not in (1, len(frames)):
            raise ValueError(f"image has {image.shape[0]} frames but instances have {len(frames)} (use 1 or the same)")
        plates = _comfy.check_image(background, "background") if background is not None else None
        options = dict(general_threshold=float(general_threshold), character_threshold=float(character_threshold),
                       general_mcut=bool(general_mcut), character_mcut=bool(character_mcut),
                       exclude=tuple(t.replace(" ", "_") for t in parse_tag_list(exclude_tags)),
                       tag_background=bool(tag_background))
        display = PromptOptions(drop_character_tags=False, escape_parentheses=False)
        out, strings, background_lines = [], [], []
        with handle.on_device() as model, _comfy.steps(len(frames)) as progress:
            for i, inst in enumerate(frames):
                frame = _comfy.image_to_uint8(frame_of(image, i, "image"))
                plate = _comfy.image_to_uint8(frame_of(plates, i, "background")) if plates is not None else None
                tagged, bg = tag_instances(model, frame, inst, background=plate, interrupt=_comfy.throw_if_interrupted,
                                           **options)
                out.append(tagged)
                strings += [format_tags(t, (), display) for t in tagged.extras["tags"]]
                background_lines.append(format_tags(bg.tags, (), display) if bg is not None else "")
                progress.tick()
        return (out, strings, "\n".join(background_lines))


class CartoonSegMergePrompts:
    DESCRIPTION = (
        "Per-instance prompts = style prompt + instance tags through a template ({style}, {tags}), with WD14-style "
        "options (drop character names, exclude list, underscores to spaces, escape parentheses, max tags). Stores "
        "them in extras['prompt'] and outputs them as a STRING list, the Ken Burns background prompt (background tags "
        "+ 'high quality, masterpiece, no_humans'), the paper's fixed negative prompt, and an Impact Pack Detailer "
        "wildcard ([LAB] with labels '<label_prefix><id>' as CartoonSegToSEGS writes them) for one frame."
    )
    CATEGORY = CATEGORY
    FUNCTION = "merge"
    RETURN_TYPES = ("CARTOONSEG_INSTANCES", "STRING", "STRING", "STRING", "STRING")
    RETURN_NAMES = ("instances", "prompts", "background_prompt", "negative_prompt", "impact_wildcard")
    OUTPUT_IS_LIST = (False, True, False, False, False)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instances": ("CARTOONSEG_INSTANCES",),
                "style_prompt": ("STRING", {"default": "masterpiece, best quality", "multiline": True}),
                "template": ("STRING", {"default": "{style}, {tags}",
                                        "tooltip": "{style} and {tags} are replaced; empty parts drop their comma"}),
                "drop_character_tags": ("BOOLEAN", {"default": True}),
                "exclude_tags": ("STRING", {"default": "", "tooltip": "comma-separated tags to leave out"}),
                "underscores_to_spaces": ("BOOLEAN", {"default": True}),
                "escape_parentheses": ("BOOLEAN", {"default": True, "tooltip": "( ) -> \\( \\) for prompt weighting"}),
                "max_tags": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip": "0 = all tags"}),
                "background_suffix": ("STRING", {"default": BACKGROUND_SUFFIX}),
                "label_prefix": ("STRING", {"default": "inst_", "tooltip": "same as CartoonSegToSEGS label_prefix"}),
                "frame": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "frame of the Impact wildcard"}),
            },
            "optional": {
                "background_tags": ("STRING", {"forceInput": True,
                                               "tooltip": "background_tags of CartoonSegTagInstances"}),
            },
        }

    def merge(self, instances, style_prompt, template, drop_character_tags, exclude_tags, underscores_to_spaces,
              escape_parentheses, max_tags, background_suffix, label_prefix, frame, background_tags=None):
        from cartoonseg.tagger import (NEGATIVE_PROMPT, background_prompt, impact_wildcard, instance_label,
                                       instance_prompts, parse_tag_list)

        frames = check_instances(instances)
        options = prompt_options(template, drop_character_tags, exclude_tags, underscores_to_spaces,
                                 escape_parentheses, max_tags)
        out, prompts = [], []
        for inst in frames:
            merged, texts = instance_prompts(inst, style_prompt, options)
            out.append(merged)
            prompts += texts
        k = pick_frame(out, frame)
        labels = [instance_label(i, str(label_prefix)) for i in out[k].ids.tolist()]
        wildcard = impact_wildcard(labels, out[k].extras["prompt"])
        bg_tags = parse_tag_list(background_tags or "")  # all frames' lines, first occurrence kept
        background = background_prompt(bg_tags, (), options, suffix=background_suffix)
        return (out, prompts, background, NEGATIVE_PROMPT, wildcard)


class CartoonSegInstanceConditioning:
    DESCRIPTION = (
        "Encodes each instance's prompt (extras['prompt'] from CartoonSegMergePrompts, else its tags) with CLIP and "
        "masks it to that instance (the math of core ConditioningSetMask), plus the background prompt masked to "
        "the area outside all instances (or the whole image), all combined into one CONDITIONING so a plain "
        "KSampler follows per-character prompts. Uses one frame of the instances."
    )
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP",),
                "instances": ("CARTOONSEG_INSTANCES",),
                "background_prompt": ("STRING", {"default": "", "multiline": True}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}),
                "background_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}),
                "background_area": (list(BACKGROUND_AREAS), {"default": "outside instances"}),
                "set_cond_area": (list(COND_AREAS), {"default": "default"}),
                "frame": ("INT", {"default": 0, "min": 0, "max": 100000}),
            }
        }

    def encode(self, clip, instances, background_prompt, strength, background_strength, background_area,
               set_cond_area, frame):
        from cartoonseg.tagger import merge_prompt

        frames = check_instances(instances)
        inst = frames[pick_frame(frames, frame)].to("cpu")
        if background_area not in BACKGROUND_AREAS:
            raise ValueError(f"background_area must be one of {BACKGROUND_AREAS}, got {background_area!r}")
        prompts = inst.extras.get("prompt")
        if prompts is None:
            tags = inst.extras.get("tags") or [{} for _ in range(len(inst))]
            chars = inst.extras.get("character_tags") or [{} for _ in range(len(inst))]
            prompts = [merge_prompt("", t or {}, list(c or ())) for t, c in zip(tags, chars)]
        masks = inst.binary.float()
        out: list = []
        with _comfy.steps(len(inst) + 1) as progress:
            for prompt, mask in zip(prompts, masks):
                if prompt and mask.any():
                    out += set_mask(encode_text(clip, prompt), mask[None], strength, set_cond_area)
                progress.tick()
            area = torch.ones(1, *inst.image_size)
            if background_area == "outside instances" and len(inst):
                area = (1.0 - masks.amax(0)).clamp(0, 1)[None]
            out += set_mask(encode_text(clip, background_prompt or ""), area, background_strength, "default")
            progress.tick()
        return (out,)


NODE_CLASS_MAPPINGS = {
    "CartoonSegTaggerLoader": CartoonSegTaggerLoader,
    "CartoonSegTagInstances": CartoonSegTagInstances,
    "CartoonSegMergePrompts": CartoonSegMergePrompts,
    "CartoonSegInstanceConditioning": CartoonSegInstanceConditioning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CartoonSegTaggerLoader": "CartoonSeg Tagger Loader (WD SwinV2 v3)",
    "CartoonSegTagInstances": "CartoonSeg Tag Instances",
    "CartoonSegMergePrompts": "CartoonSeg Merge Prompts",
    "CartoonSegInstanceConditioning": "CartoonSeg Per-Instance Conditioning",
}
