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
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .foregrounds import BG_EXTS, ForegroundError, load_background, load_foreground, read_tag_file

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


def _post_tags(rec: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if "tag_string" in rec:
        tags = tuple(str(rec.get("tag_string") or "").split())
        chars = tuple(str(rec.get("tag_string_character") or "").split())
        return tags, chars
    tags, chars = [], []
    for t in rec.get("tags") or ():
        if isinstance(t, dict):
            name = str(t.get("name", ""))
            tags.append(name)
            if str(t.get("category", "")) == "4":
                chars.append(name)
        else:
            tags.append(str(t))
    return tuple(tags), tuple(chars)


def iter_metadata_posts(metadata: str | Path, images_dir: str | Path) -> Iterator[Post]:
    """Posts from Danbooru JSON-lines metadata (a file, or a folder of ``*.json``/``*.jsonl`` files)."""
    metadata = Path(metadata)
    images_dir = Path(images_dir)
    if metadata.is_dir():
        files = sorted(p for p in metadata.iterdir() if p.suffix in (".json", ".jsonl"))
    else:
        files = [metadata]
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{f} line {n} is not valid JSON: {err}") from err
                if "id" not in rec:
                    raise ValueError(f"{f} line {n} has no 'id' field (not Danbooru post metadata)")
                tags, chars = _post_tags(rec)
                pid = str(rec["id"])
                path = danbooru_image_path(images_dir, pid, str(rec.get("file_ext") or "png"))
                yield Post(id=pid, path=path, tags=tags, characters=chars,
                           width=int(rec.get("image_width") or 0), height=int(rec.get("image_height") or 0))


def iter_folder_posts(folder: str | Path) -> Iterator[Post]:
    """Posts from a folder of images with ``<stem>.txt`` tag files (images without one are skipped)."""
    folder = Path(folder)
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in BG_EXTS or not p.is_file():
            continue
        tag_file = p.with_suffix(".txt")
        if not tag_file.is_file():
            continue
        yield Post(id=p.relative_to(folder).with_suffix("").as_posix().replace("/", "_"), path=p,
                   tags=tuple(read_tag_file(tag_file)))


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


def filter_posts(posts, out_dir: str | Path, rules: DanbooruFilter = DanbooruFilter(), verbose: bool = False) -> dict:
    """Select foregrounds and backgrounds from ``posts`` and write them to ``out_dir/fg`` and ``out_dir/bg``.

    Returns:
        Counts: ``{"fg": kept, "bg": kept, "fg_rejected": n, "bg_rejected": n, "missing": n, "seen": n}``.
    """
    out = Path(out_dir)
    (out / "fg").mkdir(parents=True, exist_ok=True)
    (out / "bg").mkdir(parents=True, exist_ok=True)
    stats = {"fg": 0, "bg": 0, "fg_rejected": 0, "bg_rejected": 0, "missing": 0, "seen": 0}
    fg_meta = open(out / "fg" / "meta.jsonl", "w", encoding="utf-8")
    bg_meta = open(out / "bg" / "meta.jsonl", "w", encoding="utf-8")
    try:
        for post in posts:
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
            if want_fg:
                try:
                    rgba = check_foreground(post.path, rules)
                except ForegroundError as err:
                    stats["fg_rejected"] += 1
                    if verbose:
                        print(f"reject fg: {err}")
                else:
                    name = f"{post.id}.png"
                    cv2.imwrite(str(out / "fg" / name), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
                    general = [t for t in post.tags if t not in post.characters]
                    fg_meta.write(json.dumps({"file": name, "tag_string": " ".join(general),
                                              "tag_string_character": " ".join(post.characters),
                                              "category_id": 0, "source": f"danbooru:{post.id}",
                                              "danbooru": True}) + "\n")
                    stats["fg"] += 1
            if want_bg:
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
                    shutil.copyfile(post.path, out / "bg" / name)
                    bg_meta.write(json.dumps({"file": name, "tag_string": " ".join(post.tags), "width": w,
                                              "height": h, "source": f"danbooru:{post.id}"}) + "\n")
                    stats["bg"] += 1
                else:
                    stats["bg_rejected"] += 1
    finally:
        fg_meta.close()
        bg_meta.close()
    return stats
