"""Per-instance booru tagging with SmilingWolf's WD SwinV2 v3 tagger in pure PyTorch, and prompt merging.

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943) §6.1/§6.2 steer diffusion
with SwinV2-tagger tags per instance. The network is :mod:`cartoonseg.models.swinv2`.

Example::

    from cartoonseg.tagger import load_tagger, tag_instances, instance_prompts, PromptOptions
    tagger = load_tagger("models/cartoonseg/tagger/wd-swinv2-tagger-v3")
    result = tagger.tag(rgb_uint8)                       # TagResult(general, character, rating)
    inst, bg = tag_instances(tagger, rgb_uint8, inst)    # extras["tags"|"character_tags"|"rating"]
    inst, prompts = instance_prompts(inst, "3d pixar style", PromptOptions())
"""

from .download import DEFAULT_TAGGER_REPO, TaggerUnavailableError, resolve_tagger_dir
from .labels import TagLabels, load_labels
from .preprocess import prepare_image, preprocess, to_model_input
from .prompts import (
    BACKGROUND_SUFFIX,
    NEGATIVE_PROMPT,
    PromptOptions,
    background_prompt,
    exclude_keys,
    format_tag,
    format_tags,
    impact_wildcard,
    instance_label,
    instance_prompts,
    join_tag_list,
    merge_prompt,
    parse_tag_list,
    tag_key,
)
from ..build import build_swinv2
from ..models.swinv2 import SWINV2_PRESETS, SwinTransformerV2, SwinV2Config, config_from_timm
from .tagging import (
    DEFAULT_EXCLUDE,
    TagResult,
    WDTagger,
    background_image,
    instance_crops,
    load_tagger,
    mcut_threshold,
    tag_instances,
)

__all__ = [
    "BACKGROUND_SUFFIX",
    "DEFAULT_EXCLUDE",
    "DEFAULT_TAGGER_REPO",
    "NEGATIVE_PROMPT",
    "PromptOptions",
    "SWINV2_PRESETS",
    "SwinTransformerV2",
    "SwinV2Config",
    "TagLabels",
    "TagResult",
    "TaggerUnavailableError",
    "WDTagger",
    "background_image",
    "background_prompt",
    "build_swinv2",
    "config_from_timm",
    "exclude_keys",
    "format_tag",
    "format_tags",
    "impact_wildcard",
    "instance_crops",
    "instance_label",
    "instance_prompts",
    "join_tag_list",
    "load_labels",
    "load_tagger",
    "mcut_threshold",
    "merge_prompt",
    "parse_tag_list",
    "prepare_image",
    "preprocess",
    "resolve_tagger_dir",
    "tag_key",
    "tag_instances",
    "to_model_input",
]
