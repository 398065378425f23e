"""Danbooru2021 foreground and background selection.

CartoonSegmentation (arXiv 2312.01943, §3.1) takes 38,908 foregrounds from Danbooru2021 posts tagged
``solo`` and ``transparent_background`` (one subject with an alpha mask) and 8,163 backgrounds tagged
``scenery`` and ``no_humans``; "the vast majority (>80 %) exceed 1024x768". No filtering code was released;
this module implements it from the paper's description and the loaders' rules (:mod:`cartoonseg.data.foregrounds`).

Inputs:

* **Danbooru metadata** as JSON lines (one post per line), in either of the two layouts found in the wild:
  the Danbooru API layout (``tag_string``, ``tag_string_character``, ``image_width``, ...) or the Danbooru2021
  dump layout (``tags: [{"name", "category"}]`` with category ``"4"`` = character). Image files are found
  under ``--images`` as ``original/<id % 1000 as 4 digits>/<id>.<ext>``, ``<bucket>/<id>.<ext>`` or
  ``<id>.<ext>``;
* or a **folder of images with tag files** (``<stem>.txt`` beside each image, comma- or space-separated).

Selection rules (:class:`DanbooruFilter`):

* foreground: has every tag of ``fg_tags``; decodes to RGBA; **real alpha** (at least
  ``min_transparent_frac`` of the pixels transparent and ``min_opaque_frac`` opaque); auto-cropped to content
  (:func:`cartoonseg.data.foregrounds.autocrop_box`); at least ``fg_min_side`` px after cropping;
* background: has every tag of ``bg_tags``, none of ``bg_exclude_tags``; decodes; short side at least
  ``bg_min_short`` and long side at least ``bg_min_long``.

Output (the foreground-folder format of :mod:`cartoonseg.data.foregrounds`): ``OUT/fg/<id>.png`` RGBA with
``OUT/fg/meta.jsonl`` carrying the tags, and ``OUT/bg/<id>.<ext>`` (bytes copied) with ``OUT/bg/meta.jsonl``.
A post's id is its Danbooru id, or for a tag folder the image's path relative to the folder with ``/`` as ``_``
(``<that>-<8 hex digits>`` when two images would get the same id). The output policy is
:mod:`cartoonseg.outputs`': ``OUT/fg`` and ``OUT/bg`` must be new, empty or written by cartoonseg (e.g. by
``train.make_fixtures`` or an earlier run) unless ``overwrite``, and must not be, lie inside or contain an input;
every file is written atomically; ``meta.jsonl`` is merged (lines of other files kept, those of the files written
now replaced), so reruns and several sources into one folder neither duplicate nor lose metadata.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..outputs import OutputFolder, check_folder, check_not_input, check_outputs_apart
from .foregrounds import (BG_EXTS, ForegroundError, imwrite, load_background, load_foreground, merge_meta,
                          read_tag_file)

__all__ = ["DanbooruFilter", "Post", "iter_metadata_posts", "iter_folder_posts", "danbooru_image_path",
           "check_foreground", "filter_posts"]


@dataclasses.dataclass(frozen=True)
class DanbooruFilter:
    """Selection rules; see the module docstring."""

    fg_tags: tuple[str, ...] = ("solo", "transparent_background")
    fg_exclude_tags: tuple[str, ...] = ()
    bg_tags: tuple[str, ...] = ("scenery", "no_humans")
    bg_exclude_tags: tuple[str, ...] = ()
    min_transparent_frac: float = 0.05
    min_opaque_frac: float = 0.02
    fg_min_side: int = 64
    bg_min_short: int = 640
    bg_min_long: int = 0
    max_fg: int | None = None
    max_bg: int | None = None

    def __post_init__(self) -> None:
        for name in ("min_transparent_frac", "min_opaque_frac"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # NaN fails too
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        for name in ("fg_min_side", "bg_min_short", "bg_min_long"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise ValueError(f"{name} must be a pixel count >= 0, got {getattr(self, name)}")
        for name in ("max_fg", "max_bg"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (or None for no limit), got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Post:
    """One candidate image: id, file (None when it cannot be found), general and character tags, size if
    known from the metadata (0 when unknown)."""

    id: str
    path: Path | None
    tags: tuple[str, ...]
    characters: tuple[str, ...] = ()
    width: int = 0
    height: int = 0


def danbooru_image_path(images_dir: Path, post_id: str, ext: str) -> Path | None:
    """Locate a Danbooru2021 image under ``images_dir`` (``original/<bucket>/``, ``<bucket>/`` or flat)."""
    try:
        bucket = f"{int(post_id) % 1000:04d}"
    except ValueError:
        bucket = str(post_id)[-3:].zfill(4)
    ext = ext.lstrip(".")
    for cand in (images_dir / "original" / bucket / f"{post_id}.{ext}", images_dir / bucket / f"{post_id}.{ext}",
                 images_dir / f"{post_id}.{ext}"):
        if cand.is_file():
            return cand
    return None


def _tag_list(value) -> list[str]:
    """Tags from a metadata field: a whitespace-separated string or a list of names (``{"name": ...}`` dicts too)."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)):
        return [str(t.get("name", "")) if isinstance(t, dict) else str(t) for t in value]
    raise ValueError(f"expected a tag string or a list of tags, got {type(value).__name__} {value!r:.60}")


def _post_tags(rec: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if "tag_string" in rec:
        return tuple(_tag_list(rec.get("tag_string"))), tuple(_tag_list(rec.get("tag_string_character")))
    tags = rec.get("tags")
    if not isinstance(tags, (list, tuple)):
        return tuple(_tag_list(tags)), ()
    names, chars = [], []
    for t in tags:
        name = str(t.get("name", "")) if isinstance(t, dict) else str(t)
        names.append(name)
        if isinstance(t, dict) and str(t.get("category", "")) == "4":
            chars.append(name)
    return tuple(t for t in names if t), tuple(chars)


def _size(value) -> int:
    """An image side from the metadata (informational: 0 when absent or not a number)."""
    try:
        return max(0, int(float(value)))
    except (TypeError, ValueError, OverflowError):
        return 0


def iter_metadata_posts(metadata: str | Path, images_dir: str | Path, *, rules: DanbooruFilter | None = None,
                        on_bad_line: Callable[[str], None] | None = None) -> Iterator[Post]:
    """Posts from Danbooru JSON-lines metadata (a file, or a folder of ``*.json``/``*.jsonl`` files), read line by
    line (UTF-8; a byte-order mark is allowed).

    Each post's image file is looked up under ``images_dir`` (up to three paths on disk). With ``rules``, only the
    posts whose tags one of its rules selects are looked up; the others come with ``path=None`` (a dump has millions
    of posts, mostly of other tags: on network storage every look-up counts). :func:`filter_posts` never reads the
    path of such a post.

    A malformed line (not UTF-8, not a JSON object with an ``id`` that is a number or a string usable as a file
    name, or with tags that are neither a string nor a list) raises ``ValueError`` naming file and line, unless
    ``on_bad_line`` is given: then that message is passed to it and the line skipped (a multi-million-line dump with
    a few damaged lines need not stop the run; the caller counts them).

    Raises:
        ValueError: at once when ``metadata`` or ``images_dir`` is missing (or ``images_dir`` is not a folder); while
            reading, for a malformed line (without ``on_bad_line``).
    """
    metadata = Path(metadata)
    images_dir = Path(images_dir)
    if not metadata.exists():
        raise ValueError(f"Danbooru metadata not found: {metadata}")
    if not images_dir.is_dir():
        raise ValueError(f"Danbooru image folder not found: {images_dir}"
                         + (" (it is a file, expected a folder)" if images_dir.exists() else ""))
    if metadata.is_dir():
        files = sorted(p for p in metadata.iterdir() if p.suffix in (".json", ".jsonl"))
    else:
        files = [metadata]
    return _iter_metadata(files, images_dir, rules, on_bad_line)


def _selectable(tags: Iterable[str], rules: DanbooruFilter) -> bool:
    """Whether a post of these tags can pass the foreground or the background rule (the tag part of them)."""
    tags = set(tags)
    return (_has(tags, rules.fg_tags, rules.fg_exclude_tags) or _has(tags, rules.bg_tags, rules.bg_exclude_tags))


def _parse_line(f: Path, n: int, raw: bytes) -> tuple[str, dict, tuple[str, ...], tuple[str, ...]] | None:
    """``(post id, record, tags, character tags)`` of metadata line ``n`` of ``f``, None for a blank line;
    ``ValueError`` naming file and line for a malformed one."""
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise ValueError(f"{f} line {n} is not valid UTF-8: {err}") from None
    if not line:
        return None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{f} line {n} is not valid JSON: {err}") from err
    if not isinstance(rec, dict):
        raise ValueError(f"{f} line {n} is a JSON {type(rec).__name__}, not an object (not Danbooru post metadata)")
    if "id" not in rec:
        raise ValueError(f"{f} line {n} has no 'id' field (not Danbooru post metadata)")
    pid = rec["id"]
    pid = str(pid).strip() if isinstance(pid, (int, str)) and not isinstance(pid, bool) else ""
    if not pid or pid in (".", "..") or any(c in pid for c in "/\\\0"):
        raise ValueError(f"{f} line {n}: 'id' must be a number or a string usable as a file name, got "
                         f"{rec['id']!r:.60}")
    try:
        tags, chars = _post_tags(rec)
    except ValueError as err:
        raise ValueError(f"{f} line {n} (post {pid}): {err}") from err
    return pid, rec, tags, chars


def _iter_metadata(files: list[Path], images_dir: Path, rules: DanbooruFilter | None,
                   on_bad_line: Callable[[str], None] | None) -> Iterator[Post]:
    for f in files:
        with open(f, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                if n == 1:
                    raw = raw.removeprefix(codecs.BOM_UTF8)
                try:
                    parsed = _parse_line(f, n, raw)
                except ValueError as err:
                    if on_bad_line is None:
                        raise
                    on_bad_line(str(err))
                    continue
                if parsed is None:
                    continue
                pid, rec, tags, chars = parsed
                path = None
                if rules is None or _selectable(tags, rules):
                    path = danbooru_image_path(images_dir, pid, str(rec.get("file_ext") or "png"))
                yield Post(id=pid, path=path, tags=tags, characters=chars,
                           width=_size(rec.get("image_width")), height=_size(rec.get("image_height")))


def iter_folder_posts(folder: str | Path) -> Iterator[Post]:
    """Posts from a folder of images with ``<stem>.txt`` tag files (images without one are skipped). The id is the
    relative path without suffix, ``/`` as ``_``; images whose ids would clash (``a/b.png`` and ``a_b.png``, or
    ``a.png`` and ``a.jpg``; compared case-insensitively) get ``<id>-<8 hex digits of the relative path>``."""
    folder = Path(folder)
    files = [p for p in sorted(folder.rglob("*"))
             if p.suffix.lower() in BG_EXTS and p.is_file() and p.with_suffix(".txt").is_file()]
    rels = [p.relative_to(folder).as_posix() for p in files]
    ids = [rel.rsplit(".", 1)[0].replace("/", "_") for rel in rels]
    clashes: dict[str, int] = {}
    for i in ids:
        clashes[i.casefold()] = clashes.get(i.casefold(), 0) + 1
    taken = {i.casefold() for i in ids}
    for p, rel, pid in zip(files, rels, ids):
        if clashes[pid.casefold()] > 1:
            digits = 8
            while True:
                cand = f"{pid}-{hashlib.sha1(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:digits]}"
                if cand.casefold() not in taken:
                    break
                digits += 2
            taken.add(cand.casefold())
            pid = cand
        yield Post(id=pid, path=p, tags=tuple(read_tag_file(p.with_suffix(".txt"))))


def check_foreground(path: Path, rules: DanbooruFilter) -> np.ndarray:
    """Load and validate a foreground candidate; returns the auto-cropped RGBA or raises ForegroundError."""
    rgba = load_foreground(path, crop=False)
    a = rgba[..., 3]
    transparent = float((a < 128).mean())
    opaque = float((a >= 128).mean())
    if transparent < rules.min_transparent_frac:
        raise ForegroundError(f"{path}: alpha is not real ({transparent:.1%} transparent < "
                              f"{rules.min_transparent_frac:.0%})")
    if opaque < rules.min_opaque_frac:
        raise ForegroundError(f"{path}: almost empty ({opaque:.1%} opaque < {rules.min_opaque_frac:.0%})")
    rgba = load_foreground(path, crop=True)
    if min(rgba.shape[:2]) < rules.fg_min_side:
        raise ForegroundError(f"{path}: content {rgba.shape[1]}x{rgba.shape[0]} is under {rules.fg_min_side} px")
    return rgba


def _has(tags: set[str], need: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    return all(t in tags for t in need) and not any(t in tags for t in exclude)


def filter_posts(posts, out_dir: str | Path, rules: DanbooruFilter = DanbooruFilter(), verbose: bool = False, *,
                 inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False) -> dict:
    """Select foregrounds and backgrounds from ``posts`` and write them to ``out_dir/fg`` and ``out_dir/bg``.

    Args:
        posts: :class:`Post` items (:func:`iter_metadata_posts`, :func:`iter_folder_posts`).
        out_dir: output root; ``fg/`` and ``bg/`` follow the output policy in the module docstring.
        rules: selection rules; once both ``max_fg`` and ``max_bg`` are reached, no further post is read.
        verbose: print every rejection.
        inputs: the input files/folders (metadata, image root, tag folder): ``fg/`` and ``bg/`` must not be, lie
            inside or contain one (checked before anything is written).
        overwrite: allow ``fg/``/``bg/`` to hold files cartoonseg did not write (same-named ones are replaced).

    Returns:
        Counts: ``{"fg": kept, "bg": kept, "fg_rejected": n, "bg_rejected": n, "missing": n, "seen": n,
        "duplicate": n}`` (``duplicate``: posts whose output name was already written in this run, skipped).
    """
    out = Path(out_dir)
    inputs = list(inputs)
    dirs = (out / "fg", out / "bg")
    check_outputs_apart(dirs, inputs)
    for d in dirs:  # both checked before either is created
        check_folder(d, inputs=inputs, overwrite=overwrite, result=False)
    fg, bg = (OutputFolder(d, inputs=inputs, overwrite=overwrite) for d in dirs)
    stats = {"fg": 0, "bg": 0, "fg_rejected": 0, "bg_rejected": 0, "missing": 0, "seen": 0, "duplicate": 0}
    fg_meta: list[dict] = []
    bg_meta: list[dict] = []
    taken = {"fg": set(), "bg": set()}

    def fresh(kind: str, name: str) -> bool:
        if name.casefold() in taken[kind]:
            stats["duplicate"] += 1
            if verbose:
                print(f"skip {kind}: {name} was already written in this run (duplicate post id)")
            return False
        taken[kind].add(name.casefold())
        return True

    def full() -> bool:  # both limits reached: the rest of the (possibly huge) metadata need not be read
        return (rules.max_fg is not None and stats["fg"] >= rules.max_fg
                and rules.max_bg is not None and stats["bg"] >= rules.max_bg)

    try:
        for post in () if full() else posts:
            stats["seen"] += 1
            tags = set(post.tags)
            want_fg = _has(tags, rules.fg_tags, rules.fg_exclude_tags) and (
                rules.max_fg is None or stats["fg"] < rules.max_fg)
            want_bg = _has(tags, rules.bg_tags, rules.bg_exclude_tags) and (
                rules.max_bg is None or stats["bg"] < rules.max_bg)
            if not (want_fg or want_bg):
                continue
            if post.path is None:
                stats["missing"] += 1
                continue
            if want_fg and fresh("fg", f"{post.id}.png"):
                try:
                    rgba = check_foreground(post.path, rules)
                except ForegroundError as err:
                    stats["fg_rejected"] += 1
                    if verbose:
                        print(f"reject fg: {err}")
                else:
                    name = f"{post.id}.png"
                    check_not_input(fg.path / name, [post.path])
                    fg.write(name, imwrite, rgba)
                    general = [t for t in post.tags if t not in post.characters]
                    fg_meta.append({"file": name, "tag_string": " ".join(general),
                                    "tag_string_character": " ".join(post.characters),
                                    "category_id": 0, "source": f"danbooru:{post.id}", "danbooru": True})
                    stats["fg"] += 1
            if want_bg and fresh("bg", f"{post.id}{post.path.suffix.lower()}"):
                w = h = 0
                ok = True
                try:  # always decode: metadata sizes cannot vouch for a truncated file
                    h, w = load_background(post.path).shape[:2]
                except ValueError as err:
                    ok = False
                    if verbose:
                        print(f"reject bg: {err}")
                if ok and (min(w, h) < rules.bg_min_short or max(w, h) < rules.bg_min_long):
                    ok = False
                    if verbose:
                        print(f"reject bg: {post.path} is {w}x{h}, under the size floor")
                if ok:
                    name = f"{post.id}{post.path.suffix.lower()}"
                    check_not_input(bg.path / name, [post.path])
                    bg.write(name, lambda tmp, src=post.path: shutil.copyfile(src, tmp))
                    bg_meta.append({"file": name, "tag_string": " ".join(post.tags), "width": w,
                                    "height": h, "source": f"danbooru:{post.id}"})
                    stats["bg"] += 1
                else:
                    stats["bg_rejected"] += 1
            if full():
                break
    except BaseException:
        for folder, records in ((bg, bg_meta), (fg, fg_meta)):  # what was written keeps its metadata
            with contextlib.suppress(Exception):  # the first error is the one reported
                merge_meta(folder, records)
            folder.abort()  # folders made by this call and still empty go again (bg first: fg made OUT/)
        raise
    merge_meta(fg, fg_meta)
    merge_meta(bg, bg_meta)
    fg.close()
    bg.close()
    return stats
