"""Tagger-prompt merging: per-instance diffusion prompts from booru tags (paper §6.1 Ken Burns, §6.2 style editing).

Per instance the paper combines "the global style prompt with instance-specific visual tags"; its code removes
character-name tags, joins with commas and turns underscores into spaces (CartoonSegmentation ``run_style.py``).
The Ken Burns background prompt is the background tags plus ``high quality, masterpiece, no_humans`` and the
inpainting negative prompt is fixed (paper §6.1). Formatting options follow WD14-tagger conventions (underscores
to spaces except kaomoji, ``\\(``/``\\)`` escaping for ComfyUI prompt weighting, exclude list, max tags).
The Impact Pack Detailer wildcard uses its ``[LAB]`` grammar: ``[LAB]`` then ``[label] prompt`` per SEG label.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Iterable, Mapping, Sequence

from ..inpaint.diffusion import NEGATIVE_PROMPT, PEOPLE_TAGS, PROMPT_SUFFIX
from ..structures import EXTRA_CHARACTER_TAGS, EXTRA_PROMPT, EXTRA_TAGS, Instances
from ..tags import KAOMOJIS, join_tag_list, parse_tag_list, tag_key, unique_tags  # their one home; re-exported

__all__ = [
    "KAOMOJIS",
    "NEGATIVE_PROMPT",
    "BACKGROUND_SUFFIX",
    "PromptOptions",
    "parse_tag_list",
    "join_tag_list",
    "tag_key",
    "exclude_keys",
    "format_tag",
    "select_tags",
    "format_tags",
    "merge_prompt",
    "background_prompt",
    "impact_wildcard",
    "instance_label",
    "instance_prompts",
]

# Paper §6.1: the fixed negative prompt of the Ken Burns inpainting, and the suffix of the background tags (their
# one home is cartoonseg.inpaint.diffusion).
BACKGROUND_SUFFIX = PROMPT_SUFFIX

_TEMPLATE_KEYS = ("{style}", "{tags}")


@dataclasses.dataclass(frozen=True)
class PromptOptions:
    """How tags become prompt text.

    Attributes:
        template: text with ``{style}`` and/or ``{tags}`` (only these two placeholders are replaced; other
            braces, e.g. wildcard syntax, are kept). Separators next to an empty part are removed.
        drop_character_tags: remove character-name tags (the paper does, so the style prompt decides identity).
        exclude: tags never emitted (matched by :func:`tag_key`: case-insensitively, spaces and underscores
            equivalent), a tuple or one comma-separated string.
        underscores_to_spaces: ``long_hair`` -> ``long hair`` (kaomoji such as ``^_^`` are kept).
        escape_parentheses: ``(`` -> ``\\(`` and ``)`` -> ``\\)`` so ComfyUI does not read them as weights.
        max_tags: keep at most this many tags (highest probability first); 0 = no limit.
        separator: text between tags.
    """

    template: str = "{style}, {tags}"
    drop_character_tags: bool = True
    exclude: tuple[str, ...] = ()
    underscores_to_spaces: bool = True
    escape_parentheses: bool = True
    max_tags: int = 0
    separator: str = ", "

    def __post_init__(self) -> None:
        if isinstance(self.exclude, str):
            object.__setattr__(self, "exclude", tuple(parse_tag_list(self.exclude)))
        else:
            object.__setattr__(self, "exclude", tuple(str(t) for t in self.exclude))
        try:  # 1.5 or "3" used to pass here and fail later, when slicing the tag list
            object.__setattr__(self, "max_tags", operator.index(self.max_tags))
        except TypeError:
            raise TypeError(f"max_tags must be an integer >= 0 (0 = no limit), got {self.max_tags!r}") from None
        if self.max_tags < 0:
            raise ValueError(f"max_tags must be >= 0 (0 = no limit), got {self.max_tags}")
        for name in ("template", "separator"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")


def exclude_keys(exclude: Iterable[str] | str) -> frozenset[str]:
    """The :func:`tag_key` of every name to exclude: an iterable of names, or one comma/newline-separated string
    (:func:`parse_tag_list`; a bare string used to be iterated character by character)."""
    names = parse_tag_list(exclude) if isinstance(exclude, str) else (str(e) for e in exclude)
    return frozenset(key for key in map(tag_key, names) if key)


def format_tag(tag: str, underscores_to_spaces: bool = True, escape_parentheses: bool = True) -> str:
    """One tag as prompt text (kaomoji keep their underscores; parentheses optionally escaped)."""
    if underscores_to_spaces and tag not in KAOMOJIS:
        tag = tag.replace("_", " ")
    if escape_parentheses:
        tag = re.sub(r"(?<!\\)([()])", r"\\\1", tag)
    return tag


def select_tags(
    tags: Mapping[str, float] | Sequence[str],
    character_tags: Iterable[str] = (),
    options: PromptOptions = PromptOptions(),
) -> list[str]:
    """Tag names to emit, in order: probability-sorted for a dict, as given for a list.

    Character tags are dropped when ``options.drop_character_tags``; excluded tags and duplicates are removed;
    then at most ``options.max_tags`` are kept.
    """
    if isinstance(tags, Mapping):
        names = [name for name, _ in sorted(tags.items(), key=lambda kv: -float(kv[1]))]
    elif isinstance(tags, str):
        names = parse_tag_list(tags)
    else:
        names = [str(t) for t in tags]
    banned = set(exclude_keys(options.exclude))
    if options.drop_character_tags:
        banned |= {tag_key(t) for t in character_tags}
    out = unique_tags(names, banned)
    return out[: options.max_tags] if options.max_tags else out


def format_tags(
    tags: Mapping[str, float] | Sequence[str],
    character_tags: Iterable[str] = (),
    options: PromptOptions = PromptOptions(),
) -> str:
    """The selected tags (:func:`select_tags`) formatted and joined with ``options.separator``."""
    chosen = select_tags(tags, character_tags, options)
    texts = (format_tag(t, options.underscores_to_spaces, options.escape_parentheses) for t in chosen)
    return options.separator.join(texts)


def _fill_template(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{style}``/``{tags}``; drop separators left dangling by empty parts: an empty placeholder takes the
    text that separates it from the previous placeholder with it (or, first, the text up to the next one), so
    ``"{style} | {tags}"`` gives ``"anime"``, not ``"anime |"``. Text before the first and after the last placeholder
    stays, joined without a dangling separator or space: ``"photo of {style}, {tags}, 4k"`` with both parts empty
    gives ``"photo of, 4k"`` (not ``"photo of , 4k"``), ``"{style} | {tags} | 4k"`` gives ``"4k"``. Only the text
    around a dropped part and commas at the very ends are touched; the parts and the rest of the template are kept
    as written."""
    pieces = re.split(r"(\{style\}|\{tags\})", template)  # literal, key, literal, key, ..., literal
    keys = [i for i, piece in enumerate(pieces) if piece in _TEMPLATE_KEYS]
    drop = set()
    for n, i in enumerate(keys):
        if values[pieces[i][1:-1]].strip():
            continue
        drop.add(i)
        if n > 0 and keys[n - 1] not in drop:
            drop.add(i - 1)  # the separator after the previous (kept) part
        elif n + 1 < len(keys):
            drop.add(i + 1)  # the separator before the next part
    # separators: the template's own (text between two placeholders) and the usual punctuation
    separators = {pieces[i].strip() for i in range(len(pieces)) if keys and keys[0] < i < keys[-1]}
    separators = sorted((separators | {",", "|", ";"}) - {""}, key=len, reverse=True)
    # only template text is trimmed at a gap, never a part's value (a tag may itself end in a comma)
    text, gap, last_literal = "", False, False
    for i, piece in enumerate(pieces):
        if i in drop:
            gap = True
            continue
        literal = piece not in _TEMPLATE_KEYS
        piece = piece if literal else values[piece[1:-1]]
        if not gap:
            text += piece
        elif piece.strip():  # close the gap left by dropped parts (a blank piece leaves it open)
            text, gap = _close_gap(text, piece, separators, trim_right=literal), False
        else:
            continue
        last_literal = literal
    if gap:
        text = text.rstrip()
        if last_literal:
            text = _strip_separator(text, separators, at_end=True)
    return text.strip(" \t\n,")  # a prompt never starts or ends with a comma (even one of a tag's own)


def _strip_separator(text: str, separators: Sequence[str], at_end: bool) -> str:
    """``text`` without one separator at its end (``at_end``) or start; a word separator (``BREAK``) only as a whole
    word."""
    for sep in separators:
        if at_end and text.endswith(sep):
            before = text[: len(text) - len(sep)]
            if not (sep[0].isalnum() and before[-1:].isalnum()):
                return before.rstrip()
        if not at_end and text.startswith(sep):
            after = text[len(sep):]
            if not (sep[-1].isalnum() and after[:1].isalnum()):
                return after.lstrip()
    return text


def _close_gap(left: str, right: str, separators: Sequence[str], trim_right: bool) -> str:
    """``left + right`` where template text between them was dropped: no separator at the very start, none twice
    in a row, no space before a comma (a separator is only removed from ``right`` when ``trim_right``)."""
    head, tail = left.rstrip(), right.lstrip()
    if trim_right and (not head or _strip_separator(head, separators, at_end=True) != head):
        tail = _strip_separator(tail, separators, at_end=False)
    if not head or not tail or tail[0] in ",;":
        return head + tail
    return head + (" " if head != left or tail != right else "") + tail


def merge_prompt(
    style: str,
    tags: Mapping[str, float] | Sequence[str],
    character_tags: Iterable[str] = (),
    options: PromptOptions = PromptOptions(),
) -> str:
    """Global style prompt + one instance's tags, through ``options.template``.

    Example:
        ``merge_prompt("3d pixar style", {"1girl": .99, "hatsune_miku": .97, "twintails": .9}, ["hatsune_miku"])``
        -> ``"3d pixar style, 1girl, twintails"``.
    """
    # a style typed with a trailing comma ("masterpiece,") must not give "masterpiece,, 1girl"
    values = {"style": (style or "").strip().strip(",").strip(), "tags": format_tags(tags, character_tags, options)}
    return _fill_template(options.template, values)


def background_prompt(
    tags: Mapping[str, float] | Sequence[str],
    character_tags: Iterable[str] = (),
    options: PromptOptions = PromptOptions(),
    suffix: str = BACKGROUND_SUFFIX,
    style: str = "",
    drop_people_tags: bool = True,
) -> str:
    """Ken Burns background prompt: ``[style, ]background tags, suffix`` (paper: tags + the quality suffix).

    The suffix is emitted as written (``no_humans`` keeps its underscore, as in the paper's code). A tag that the
    suffix already has is left out (``no humans`` before ``no_humans``; names compared by
    :func:`cartoonseg.tags.tag_key`), before ``options.max_tags`` counts, by the same rule
    (:func:`cartoonseg.tags.unique_tags`) as repeated tags and as :func:`cartoonseg.inpaint.background_prompt`.
    With ``drop_people_tags`` (default) tags describing people (:data:`cartoonseg.inpaint.PEOPLE_TAGS`:
    ``1girl``, ``solo``, ...) are left out too, as the inpainting prompt drops them: they would fight the negative
    prompt that goes with this one.
    """
    suffix = (suffix or "").strip()
    # the suffix's tags (and people tags) join the exclude list, so select_tags drops them as it drops repeats and
    # excluded names
    drop = (*parse_tag_list(suffix), *(sorted(PEOPLE_TAGS) if drop_people_tags else ()))
    options = dataclasses.replace(options, exclude=(*options.exclude, *drop))
    parts = [(style or "").strip(), format_tags(tags, character_tags, options), suffix]
    return options.separator.join(p for p in parts if p)


def instance_label(instance_id: int, prefix: str = "inst_") -> str:
    """SEG label of an instance, as CartoonSegToSEGS writes it: ``<prefix><id>`` (id from ``Instances.ids``) with
    every character outside ``[A-Za-z0-9_.]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", f"{prefix}{int(instance_id)}")


_LABEL = re.compile(r"^[A-Za-z0-9_. ]+$")


def impact_wildcard(labels: Sequence[str], prompts: Sequence[str], common: str = "") -> str:
    """Impact Pack Detailer wildcard selecting a prompt by SEG label: ``[LAB]`` + ``[label] prompt`` lines.

    Impact concatenates ``[ALL]`` and label text without a separator, so a ``common`` prompt is folded into
    every label's text instead of using ``[ALL]``. Square brackets inside prompts become escaped parentheses
    ``\\(`` ``\\)`` (the grammar ends a prompt at ``[``); newlines become spaces.

    Raises:
        ValueError: a label outside Impact's ``[A-Za-z0-9_. ]+`` or a length mismatch.
    """
    if len(labels) != len(prompts):
        raise ValueError(f"{len(labels)} labels but {len(prompts)} prompts")
    lines = ["[LAB]"]
    for label, prompt in zip(labels, prompts):
        if not _LABEL.match(label):
            raise ValueError(f"Impact wildcard label {label!r} must match [A-Za-z0-9_. ]+")
        text = ", ".join(p for p in ((common or "").strip(), (prompt or "").strip()) if p)
        text = text.replace("[", "\\(").replace("]", "\\)").replace("\n", " ")
        lines.append(f"[{label}] {text}")
    return "\n".join(lines)


def instance_prompts(
    instances: Instances, style: str = "", options: PromptOptions = PromptOptions()
) -> tuple[Instances, list[str]]:
    """Merged prompt per instance from ``extras["tags"]`` (and ``extras["character_tags"]`` when present).

    Returns:
        ``(instances, prompts)``: a copy whose ``extras["prompt"]`` holds the prompt strings, and the list.

    Raises:
        ValueError: the instances carry no ``"tags"`` (tag them first with
            :func:`~cartoonseg.tagger.tagging.tag_instances`).
    """
    n = len(instances)
    if EXTRA_TAGS not in instances.extras:
        raise ValueError("instances carry no extras['tags']: tag them first (tag_instances / CartoonSegTagInstances)")
    characters = instances.extras.get(EXTRA_CHARACTER_TAGS) or [{} for _ in range(n)]
    prompts = [
        merge_prompt(style, tags or {}, list(chars or ()), options)
        for tags, chars in zip(instances.extras[EXTRA_TAGS], characters)
    ]
    return instances.replace(extras={**instances.extras, EXTRA_PROMPT: prompts}), prompts
