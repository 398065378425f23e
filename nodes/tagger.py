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
from functools import partial

import torch

from cartoonseg.device import PRECISION_CHOICES as PRECISIONS
from cartoonseg.inpaint.diffusion import PROMPT_SUFFIX as BACKGROUND_SUFFIX
from cartoonseg.structures import EXTRA_CHARACTER_TAGS, EXTRA_PROMPT, EXTRA_TAGS
from cartoonseg.tagger.download import REQUIRED_FILES
from cartoonseg.tags import DEFAULT_CHARACTER_THRESHOLD, DEFAULT_EXCLUDE, DEFAULT_GENERAL_THRESHOLD, join_tag_list
from cartoonseg.tags import DEFAULT_TAGGER_REPO as DEFAULT_REPO

from . import _comfy
from ._comfy import DEVICES

CATEGORY = f"{_comfy.CATEGORY}/tagger"
LOADER_CATEGORY = f"{_comfy.CATEGORY}/loaders"
TAGGER_SUBDIR = "tagger"
BACKGROUND_AREAS = ("outside instances", "whole image")
COND_AREAS = ("default", "mask bounds")


class CartoonSegTagger(_comfy.ModelHolder):
    """The ``CARTOONSEG_TAGGER`` payload: a :class:`cartoonseg.tagger.WDTagger` held on ComfyUI's model management
    (read from ``path`` when a node first needs it, placed on the device by ``load_models_gpu``, dropped when
    ComfyUI unloads models; see :class:`nodes._comfy.ModelHolder`)."""

    def __init__(self, path: str, *, precision: str = "fp32", device=None, offload_device=None) -> None:
        from cartoonseg.tagger import load_tagger

        self.path = str(path)
        self.precision = precision
        # loaded on the CPU, run on `device`: the precision is checked for the device it runs on
        super().__init__(partial(load_tagger, self.path, device="cpu", precision=precision, allow_download=False,
                                 run_device=device),
                         name=f"tagger {os.path.basename(self.path)}", device=device, offload_device=offload_device,
                         files=(self.path,))

    @property
    def tagger(self):
        return self.payload()


# ---------------------------------------------------------------------------------------------- helpers
def tagger_dirs() -> list[str]:
    """``<cartoonseg model folder>/tagger`` for every registered cartoonseg model folder."""
    return [os.path.join(d, TAGGER_SUBDIR) for d in _comfy.model_dirs()]


def tagger_choices() -> list[str]:
    """The default repo id, then every ``tagger/<name>`` folder with the tagger's files (``model.safetensors`` and
    ``selected_tags.csv``: ``cartoonseg.tagger.download.REQUIRED_FILES``)."""
    out = [DEFAULT_REPO]
    for base in tagger_dirs():
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            folder = os.path.join(base, name)
            if all(os.path.isfile(os.path.join(folder, f)) for f in REQUIRED_FILES):
                if name not in out:
                    out.append(name)
    return out


def resolve_tagger_folder(choice: str, allow_download: bool) -> str:
    """Folder of a loader choice: a folder name under ``models/cartoonseg/tagger`` or a repo id (looked up as
    ``tagger/<repo name>``, else downloaded there when allowed). Nothing outside the model folders is read:
    absolute paths and ``..`` are refused."""
    from cartoonseg.tagger import resolve_tagger_dir

    if not isinstance(choice, str) or not choice.strip():
        raise ValueError(f"tagger must be a folder name or a Hugging Face repo id, got {choice!r}")
    choice = _comfy.safe_model_name(choice, "tagger")
    if choice.count("/") > 1:
        raise ValueError(f"tagger {choice!r} must be a folder name or a Hugging Face repo id (owner/name)")
    name = choice.split("/")[-1]
    for base in tagger_dirs():
        folder = os.path.join(base, name)
        if os.path.isdir(folder) and os.path.isfile(os.path.join(folder, "model.safetensors")):
            return str(resolve_tagger_dir(folder))
    allow = bool(allow_download) and os.environ.get("CARTOONSEG_NO_DOWNLOAD", "") in ("", "0")
    return str(resolve_tagger_dir(choice, download_dir=tagger_dirs()[0], allow_download=allow))


def check_tagger(tagger) -> CartoonSegTagger:
    if not isinstance(tagger, CartoonSegTagger):
        raise TypeError(f"tagger must be a CARTOONSEG_TAGGER from Load Tagger, got {type(tagger).__name__}")
    return tagger


def pick_frame(frames: list, frame: int) -> int:
    if not -len(frames) <= int(frame) < len(frames):
        raise ValueError(f"frame {frame} out of range for {len(frames)} frames of instances")
    return int(frame) % len(frames)


def prompt_options(template, drop_character_tags, exclude_tags, underscores_to_spaces, escape_parentheses, max_tags):
    from cartoonseg.tagger import PromptOptions

    return PromptOptions(template=str(template), drop_character_tags=bool(drop_character_tags),
                         exclude=str(exclude_tags or ""), underscores_to_spaces=bool(underscores_to_spaces),
                         escape_parentheses=bool(escape_parentheses), max_tags=int(max_tags))


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
    CATEGORY = LOADER_CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("CARTOONSEG_TAGGER",)
    RETURN_NAMES = ("tagger",)
    OUTPUT_TOOLTIPS = ("the tagger, for Tag Instances",)

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

    @classmethod
    def IS_CHANGED(cls, tagger, **_):
        """Path, size and mtime of the tagger folder's files: replaced files re-run the loader (no download here)."""
        return _comfy.loader_fingerprint(lambda: [resolve_tagger_folder(tagger, False)])

    def load(self, tagger, device, precision, auto_download):
        from cartoonseg.device import resolve_precision

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        dev = _comfy.resolve_device(device)
        prec = resolve_precision(precision, dev)
        folder = resolve_tagger_folder(tagger, auto_download)
        offload = torch.device("cpu") if dev.type == "cpu" else torch.device(_comfy.offload_device())
        return (CartoonSegTagger(folder, precision=prec, device=dev, offload_device=offload),)


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
    OUTPUT_TOOLTIPS = ("the instances with their tags", "one tag string per instance (all frames in order)",
                       "the background's general tags, one line per frame, raw (underscores kept, no character "
                       "names, a comma inside a tag name written \\,) for Merge Prompts' background_tags")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tagger": ("CARTOONSEG_TAGGER", {"tooltip": "from Load Tagger"}),
                "image": ("IMAGE", {"tooltip": "the frames the instances were found in"}),
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "from Segment"}),
                "general_threshold": ("FLOAT", {"default": DEFAULT_GENERAL_THRESHOLD, "min": 0.0, "max": 1.0,
                                                "step": 0.01, "tooltip": "minimum confidence of a general tag"}),
                "character_threshold": ("FLOAT", {"default": DEFAULT_CHARACTER_THRESHOLD, "min": 0.0, "max": 1.0,
                                                  "step": 0.01,
                                                  "tooltip": "minimum confidence of a character-name tag"}),
                "general_mcut": ("BOOLEAN", {"default": False, "tooltip": "MCut threshold for general tags"}),
                "character_mcut": ("BOOLEAN", {"default": False,
                                               "tooltip": "MCut threshold for characters (at least 0.15)"}),
                "exclude_tags": ("STRING", {"default": join_tag_list(DEFAULT_EXCLUDE), "multiline": False,
                                            "tooltip": "comma-separated tags never reported (any case; spaces "
                                                       "and underscores alike, as in Merge Prompts; \\, is a "
                                                       "comma inside a tag)"}),
                "tag_background": ("BOOLEAN", {"default": True,
                                               "tooltip": "also tag the background (for the Ken Burns prompt)"}),
            },
            "optional": {
                "background": ("IMAGE", {"tooltip": "inpainted background plate to tag instead of the masked image"}),
            },
        }

    def tag(self, tagger, image, instances, general_threshold, character_threshold, general_mcut, character_mcut,
            exclude_tags, tag_background, background=None):
        from cartoonseg.tagger import PromptOptions, format_tags, join_tag_list, tag_instances

        handle = check_tagger(tagger)
        image, frames = _comfy.frames_instances(_comfy.check_image(image), instances)  # one output frame per pair
        plates = _comfy.check_image(background, "background") if background is not None else None
        _comfy.check_batches(len(frames), background=plates.shape[0] if plates is not None else None)
        options = dict(general_threshold=float(general_threshold), character_threshold=float(character_threshold),
                       general_mcut=bool(general_mcut), character_mcut=bool(character_mcut),
                       exclude=str(exclude_tags or ""),
                       tag_background=bool(tag_background))
        display = PromptOptions(drop_character_tags=False, escape_parentheses=False)
        # the background's line is raw (names as in the label file, a comma inside a name written "\,") and without
        # character names (a background has none): Merge Prompts reads it back name by name (parse_tag_list) and
        # formats it with its own options, as it does the instances' tags
        out, strings, background_lines = [], [], []
        with handle.on_device() as model, _comfy.steps(len(frames)) as progress:
            for i, inst in enumerate(frames):
                frame = _comfy.image_to_uint8(image[i])
                plate = _comfy.image_to_uint8(_comfy.pick(plates, i)) if plates is not None else None
                tagged, bg = tag_instances(model, frame, inst, background=plate, interrupt=_comfy.throw_if_interrupted,
                                           **options)
                out.append(tagged)
                strings += [format_tags(t, (), display) for t in tagged.extras[EXTRA_TAGS]]
                background_lines.append(join_tag_list(bg.general) if bg is not None else "")
                progress.tick()
        return (out, strings, "\n".join(background_lines))


class CartoonSegMergePrompts:
    DESCRIPTION = (
        "Per-instance prompts = style prompt + instance tags through a template ({style}, {tags}), with WD14-style "
        "options (drop character names, exclude list, underscores to spaces, escape parentheses, max tags). Stores "
        "them in extras['prompt'] and outputs them as a STRING list, the Ken Burns background prompt (background tags "
        f"+ '{BACKGROUND_SUFFIX}'), the paper's fixed negative prompt, and an Impact Pack Detailer "
        "wildcard ([LAB] with labels '<label_prefix><id>' as Instances to SEGS writes them) for one frame."
    )
    CATEGORY = CATEGORY
    FUNCTION = "merge"
    RETURN_TYPES = ("CARTOONSEG_INSTANCES", "STRING", "STRING", "STRING", "STRING")
    RETURN_NAMES = ("instances", "prompts", "background_prompt", "negative_prompt", "impact_wildcard")
    OUTPUT_IS_LIST = (False, True, False, False, False)
    OUTPUT_TOOLTIPS = ("the instances with their prompts", "one prompt per instance (all frames in order)",
                       "prompt for the background (Ken Burns inpainting)", "the paper's fixed negative prompt",
                       "Impact Pack Detailer wildcard ([LAB] per instance) of the chosen frame")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "tagged instances (from Tag Instances)"}),
                "style_prompt": ("STRING", {"default": "masterpiece, best quality", "multiline": True,
                                            "tooltip": "text put into {style} of every prompt"}),
                "template": ("STRING", {"default": "{style}, {tags}",
                                        "tooltip": "{style} and {tags} are replaced; an empty part drops the text "
                                                   "that separates it from the other (', ', ' | ', ' BREAK '), "
                                                   "leaving no dangling separator"}),
                "drop_character_tags": ("BOOLEAN", {"default": True,
                                                    "tooltip": "leave character names out of the prompts"}),
                "exclude_tags": ("STRING", {"default": "", "tooltip": "comma-separated tags to leave out (any case; "
                                                                     "spaces and underscores alike; \\, is a comma "
                                                                     "inside a tag)"}),
                "underscores_to_spaces": ("BOOLEAN", {"default": True,
                                                      "tooltip": "long_hair -> long hair"}),
                "escape_parentheses": ("BOOLEAN", {"default": True, "tooltip": "( ) -> \\( \\) for prompt weighting"}),
                "max_tags": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip": "0 = all tags"}),
                "background_suffix": ("STRING", {"default": BACKGROUND_SUFFIX,
                                                 "tooltip": "appended to the background prompt (the paper's text)"}),
                "label_prefix": ("STRING", {"default": "inst_", "tooltip": "same as label_prefix of Instances to SEGS"}),
                "frame": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "frame of the Impact wildcard"}),
            },
            "optional": {
                "background_tags": ("STRING", {"forceInput": True,
                                               "tooltip": "background_tags of Tag Instances (tags separated by "
                                                          "commas or newlines; \\, is a comma inside a tag)"}),
            },
        }

    def merge(self, instances, style_prompt, template, drop_character_tags, exclude_tags, underscores_to_spaces,
              escape_parentheses, max_tags, background_suffix, label_prefix, frame, background_tags=None):
        from cartoonseg.tagger import (NEGATIVE_PROMPT, background_prompt, impact_wildcard, instance_label,
                                       instance_prompts, parse_tag_list)

        frames = _comfy.check_instances(instances)
        options = prompt_options(template, drop_character_tags, exclude_tags, underscores_to_spaces,
                                 escape_parentheses, max_tags)
        out, prompts = [], []
        for inst in frames:
            merged, texts = instance_prompts(inst, style_prompt, options)
            out.append(merged)
            prompts += texts
        k = pick_frame(out, frame)
        labels = [instance_label(i, str(label_prefix)) for i in out[k].ids.tolist()]
        wildcard = impact_wildcard(labels, out[k].extras[EXTRA_PROMPT])
        bg_tags = parse_tag_list(background_tags or "")  # all frames' lines, first occurrence kept
        background = background_prompt(bg_tags, (), options, suffix=background_suffix)
        return (out, prompts, background, NEGATIVE_PROMPT, wildcard)


class CartoonSegInstanceConditioning:
    DESCRIPTION = (
        "Encodes each instance's prompt (extras['prompt'] from Merge Prompts, else its tags) with CLIP and "
        "masks it to that instance (the math of core ConditioningSetMask), plus the background prompt masked to "
        "the area outside all instances (or the whole image), all combined into one CONDITIONING so a plain "
        "KSampler follows per-character prompts. Uses one frame of the instances."
    )
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("one CONDITIONING with each prompt masked to its instance, for a KSampler",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "the checkpoint's CLIP"}),
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "instances with prompts (Merge Prompts) or tags"}),
                "background_prompt": ("STRING", {"default": "", "multiline": True,
                                                 "tooltip": "prompt of the area outside the instances"}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "strength of each instance's masked prompt"}),
                "background_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                                  "tooltip": "strength of the background prompt"}),
                "background_area": (list(BACKGROUND_AREAS), {"default": "outside instances",
                                                             "tooltip": "where the background prompt applies"}),
                "set_cond_area": (list(COND_AREAS), {"default": "default",
                                                     "tooltip": "as core ConditioningSetMask: 'mask bounds' "
                                                                "samples each prompt in its box"}),
                "frame": ("INT", {"default": 0, "min": 0, "max": 100000,
                                  "tooltip": "which frame's instances (a CONDITIONING describes one image)"}),
            }
        }

    def encode(self, clip, instances, background_prompt, strength, background_strength, background_area,
               set_cond_area, frame):
        from cartoonseg.tagger import merge_prompt

        frames = _comfy.check_instances(instances)
        inst = frames[pick_frame(frames, frame)].to("cpu")
        if background_area not in BACKGROUND_AREAS:
            raise ValueError(f"background_area must be one of {BACKGROUND_AREAS}, got {background_area!r}")
        prompts = inst.extras.get(EXTRA_PROMPT)
        if prompts is None:
            tags = inst.extras.get(EXTRA_TAGS) or [{} for _ in range(len(inst))]
            chars = inst.extras.get(EXTRA_CHARACTER_TAGS) or [{} for _ in range(len(inst))]
            prompts = [merge_prompt("", t or {}, list(c or ())) for t, c in zip(tags, chars)]
        masks = inst.binary.float()
        out: list = []
        with _comfy.steps(len(inst) + 1) as progress:
            for prompt, mask in zip(prompts, masks):
                if prompt and mask.any():
                    out += set_mask(_comfy.encode_text(clip, prompt), mask[None], strength, set_cond_area)
                progress.tick()
            area = torch.ones(1, *inst.image_size)
            if background_area == "outside instances" and len(inst):
                area = (1.0 - masks.amax(0)).clamp(0, 1)[None]
            out += set_mask(_comfy.encode_text(clip, background_prompt or ""), area, background_strength, "default")
            progress.tick()
        return (out,)


NODE_CLASS_MAPPINGS = {
    "CartoonSegTaggerLoader": CartoonSegTaggerLoader,
    "CartoonSegTagInstances": CartoonSegTagInstances,
    "CartoonSegMergePrompts": CartoonSegMergePrompts,
    "CartoonSegInstanceConditioning": CartoonSegInstanceConditioning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CartoonSegTaggerLoader": "Load Tagger (CartoonSeg)",
    "CartoonSegTagInstances": "Tag Instances (CartoonSeg)",
    "CartoonSegMergePrompts": "Merge Prompts (CartoonSeg)",
    "CartoonSegInstanceConditioning": "Instance Conditioning (CartoonSeg)",
}
