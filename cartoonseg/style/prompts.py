"""Per-instance prompts for style editing: global style prompt + the instance's own tags (paper §6.2).

The tag formatting and style/tag merging are the tagger's (:mod:`cartoonseg.tagger.prompts`: character-name tags
dropped, underscores to spaces, parentheses escaped). This module only decides, per instance, which source to use:

1. ``extras["prompt"][i]`` when present (a prompt already merged, e.g. by CartoonSegMergePrompts with the user's
   own template); the style prompt is put in front unless that text already contains it;
2. otherwise ``extras["tags"][i]`` (``{tag: prob}``) merged with the style by the tagger's ``merge_prompt``;
3. otherwise the style prompt alone.
"""

from __future__ import annotations

from ..structures import EXTRA_CHARACTER_TAGS, EXTRA_PROMPT, EXTRA_TAGS, Instances
from ..tagger.prompts import PromptOptions, merge_prompt

__all__ = ["instance_prompts", "join_prompt"]


def join_prompt(*parts: str) -> str:
    """Join the non-empty parts with ", " (surrounding spaces and commas of each part trimmed)."""
    return ", ".join(p.strip().strip(",").strip() for p in parts if p and p.strip().strip(","))


def instance_prompts(
    instances: Instances, style: str = "", options: PromptOptions | None = None
) -> list[str]:
    """The sampling prompt of every instance (see the module docstring for the rules).

    Args:
        instances: one frame's instances.
        style: the global style prompt.
        options: tag formatting used when prompts are built from ``extras["tags"]`` (None = the tagger's defaults).

    Returns:
        ``N`` prompt strings.
    """
    options = PromptOptions() if options is None else options
    n = len(instances)
    given = instances.extras.get(EXTRA_PROMPT)
    tags = instances.extras.get(EXTRA_TAGS)
    characters = instances.extras.get(EXTRA_CHARACTER_TAGS)
    style = (style or "").strip()
    out: list[str] = []
    for i in range(n):
        text = given[i] if given is not None else None
        if isinstance(text, str) and text.strip():
            text = text.strip()
            out.append(text if style and _holds(text, style) else join_prompt(style, text))
        elif tags is not None and tags[i]:
            chars = list(characters[i] or ()) if characters is not None else ()
            out.append(merge_prompt(style, tags[i], chars, options))
        else:
            out.append(style)
    return out


def _holds(prompt: str, style: str) -> bool:
    """Whether ``prompt`` already carries ``style`` as whole comma-separated pieces, wherever they stand (a tag such
    as ``anime coloring`` or ``watercolor_(medium)`` does not carry the style ``anime`` / ``watercolor``, first or
    not). A style of several pieces (``"watercolor, soft light"``) must appear as that run of pieces."""
    pieces = [p.strip() for p in prompt.lower().split(",")]
    key = [p.strip() for p in style.lower().split(",") if p.strip()]
    return bool(key) and any(pieces[i:i + len(key)] == key for i in range(len(pieces) - len(key) + 1))
