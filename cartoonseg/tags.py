"""Booru tag lists and the tagger defaults shared by the library and the ComfyUI nodes (standard library only).

* :func:`parse_tag_list` / :func:`join_tag_list`: a tag list as one string (commas or newlines between tags, ``\\,``
  a comma inside a tag name), read wherever a list of tags arrives as text: the tagger's exclude lists, Merge
  Prompts' ``background_tags``, the Ken Burns / inpainting background prompt (:mod:`cartoonseg.inpaint.diffusion`);
* :func:`tag_key`: how tag names are compared wherever a tag is matched by name (the tagger's and Merge Prompts'
  exclude lists and de-duplication, the inpainting background prompt's de-duplication and character-tag dropping);
* :func:`unique_tags`: the one duplicate rule of every prompt built from tags (Merge Prompts' instance and background
  prompts, the inpainting background prompt): repeats and tags the prompt's suffix already has are left out;
* :data:`DEFAULT_TAGGER_REPO`, :data:`DEFAULT_EXCLUDE`, :data:`DEFAULT_GENERAL_THRESHOLD`,
  :data:`DEFAULT_CHARACTER_THRESHOLD`: the tagger's defaults, also the node inputs' defaults.

This module imports nothing from ``cartoonseg`` (nor torch), so :mod:`cartoonseg.tagger` and
:mod:`cartoonseg.inpaint` both import it without an import cycle, and a node module reads these constants without
keeping copies of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["DEFAULT_CHARACTER_THRESHOLD", "DEFAULT_EXCLUDE", "DEFAULT_GENERAL_THRESHOLD", "DEFAULT_TAGGER_REPO",
           "KAOMOJIS", "join_tag_list", "parse_tag_list", "tag_key", "unique_tags"]

#: SmilingWolf's WD SwinV2 v3 tagger on the Hugging Face Hub (the Load Tagger node's first choice).
DEFAULT_TAGGER_REPO = "SmilingWolf/wd-swinv2-tagger-v3"
#: Tags dropped from an instance's tags by default: the white fill outside the instance's mask causes them (paper's
#: code, ``animeinsseg.infer_tags``).
DEFAULT_EXCLUDE: tuple[str, ...] = ("simple_background", "white_background")
#: A tag is kept when its probability is above these (the reference Space's defaults): general tags, character
#: names. The library's signatures, both CLIs (tagger, annotate) and Tag Instances default to them.
DEFAULT_GENERAL_THRESHOLD = 0.35
DEFAULT_CHARACTER_THRESHOLD = 0.85

# Tags whose underscore is part of the face (the reference Space keeps these unreplaced).
KAOMOJIS: frozenset[str] = frozenset(
    {"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@", "^_^",
     "o_o", "u_u", "x_x", "|_|", "||_||"}
)  # fmt: skip

# one token of a tag list: an escape (\\ \, \( \)), a separator, a run of other text, or a lone backslash
_LIST_TOKEN = re.compile(r"\\([\\,()])|([,\n])|([^\\,\n]+|\\)")


def parse_tag_list(text: str) -> list[str]:
    """Split a tag list (commas or newlines) into stripped, non-empty tags.

    ``\\,`` is a comma inside a tag (``ah\\, so`` is the one tag ``ah, so``), ``\\\\`` a backslash, and the prompt
    escapes ``\\(`` ``\\)`` are undone; any other backslash is kept (``\\m/``). :func:`join_tag_list` writes lists
    this way, so names with commas survive the round trip (Tag Instances' ``background_tags`` -> Merge Prompts).
    """
    items, current = [], []
    for escaped, separator, text_run in _LIST_TOKEN.findall(text or ""):
        if separator:
            items.append("".join(current))
            current = []
        else:
            current.append(escaped or text_run)
    items.append("".join(current))
    return [t.strip() for t in items if t.strip()]


def join_tag_list(tags: Iterable[str], separator: str = ", ") -> str:
    """Tag names as one list string that :func:`parse_tag_list` reads back to the same names: commas in a name
    become ``\\,`` and a backslash that could read as an escape becomes ``\\\\`` (names are otherwise as written:
    underscores kept, parentheses not escaped). ``separator`` must hold a comma or a newline."""
    if not re.search(r"[,\n]", separator):
        raise ValueError(f"separator must contain a comma or a newline, got {separator!r}")
    return separator.join(re.sub(r"\\(?=[\\,()]|$)", r"\\\\", str(t)).replace(",", "\\,") for t in tags)


def tag_key(tag: str) -> str:
    """How tag names are compared, everywhere a tag is matched by name (the tagger's and Merge Prompts' exclude
    lists, character-name dropping, de-duplication, the inpainting background prompt): surrounding spaces and
    ``\\(``/``\\)`` escapes ignored, lower case, underscores and spaces equivalent (kaomoji such as ``^_^`` compare
    as written, in lower case). So ``Long Hair``, ``long_hair`` and ``LONG_HAIR`` are one tag, and
    ``star \\(symbol\\)`` is ``star_(symbol)``."""
    tag = tag.strip().replace("\\(", "(").replace("\\)", ")").lower()  # idempotent: a key is its own key
    return tag if tag in KAOMOJIS else tag.replace("_", " ")


def unique_tags(tags: Iterable[str], drop: Iterable[str] = ()) -> list[str]:
    """``tags`` in order without repeats, names compared by :func:`tag_key`: a tag is left out when its key is empty,
    is the key of a name in ``drop`` (names or keys: an exclude list, character tags, the tags that the prompt's
    suffix already has) or of an earlier tag. The first spelling is kept, as given. The one duplicate rule of the
    prompts built from tags (:func:`cartoonseg.tagger.select_tags`, both ``background_prompt`` functions)."""
    seen = {tag_key(str(t)) for t in drop}
    out: list[str] = []
    for name in tags:
        key = tag_key(name)
        if key and key not in seen:
            seen.add(key)
            out.append(name)
    return out
