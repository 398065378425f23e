"""What ``annotate`` reads: image folders, list files and COCO files, turned into one ordered list of images.

Rules (documented in the README):

* a **folder** gives its image files (suffixes in :data:`IMAGE_SUFFIXES`, case-insensitive) in sorted order; with
  ``recursive`` also those of its sub-folders;
* a **list file** (``.txt``) gives one image path per line; blank lines and lines starting with ``#`` are skipped;
  relative paths are relative to the list file's folder;
* a **COCO file** (``.json``) gives its ``images`` entries: the path is ``image_root / file_name`` (``image_root``
  defaults to the COCO file's folder) and the image keeps its COCO ``id`` and ``file_name``;
* any other existing file is taken as one image.

``file_name`` of images that do not come from a COCO file is their path relative to ``image_root`` when they lie
under it, else relative to the deepest folder holding all of them. Image ids: COCO images keep theirs (they must be
unique); the others are numbered after the largest COCO id, in input order. The same file given twice (an image or a
COCO file) is kept once (the first time).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..io import IMAGE_SUFFIXES  # re-exported; the one list lives in cartoonseg.io

__all__ = ["IMAGE_SUFFIXES", "ImageItem", "collect_inputs"]



@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One input image: ``path`` (absolute), the COCO ``file_name`` and ``image_id`` it gets in the output."""

    path: str
    file_name: str
    image_id: int


def _folder_images(folder: Path, recursive: bool, exclude: Sequence[Path] = ()) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    images = sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if exclude:
        images = [p for p in images if not any(p.resolve().is_relative_to(e) for e in exclude)]
    return images


def _list_file(path: Path) -> list[Path]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def _coco_file(path: Path, image_root: Path | None) -> list[tuple[Path, str, int]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read COCO file {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path} is not a COCO file: it needs an 'images' list")
    root = image_root if image_root is not None else path.parent
    out = []
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "file_name" not in im or "id" not in im:
            raise ValueError(f"{path}: images[{i}] needs 'id' and 'file_name'")
        out.append((root / str(im["file_name"]), str(im["file_name"]), int(im["id"])))
    return out


def collect_inputs(sources: Sequence[str | os.PathLike], *, image_root: str | os.PathLike | None = None,
                   recursive: bool = False, exclude: Sequence[str | os.PathLike] = ()) -> list[ImageItem]:
    """The images named by ``sources`` (folders, ``.txt`` lists, COCO ``.json`` files, image files), in order.
    Folders are walked without the folders in ``exclude`` (the run's own outputs, e.g. a ``--per-image`` folder
    inside a ``--recursive`` input, are never its inputs).

    Raises:
        ValueError: a source that does not exist, an image a list or COCO file names that does not exist,
            duplicate COCO image ids, or no image at all.
    """
    root = Path(image_root).resolve() if image_root is not None else None
    coco: list[tuple[Path, str, int]] = []
    plain: list[Path] = []
    order: list[tuple[str, int]] = []  # ("coco"|"plain", index) in input order
    coco_files: set[Path] = set()
    skip = [Path(e).expanduser().resolve() for e in exclude]
    for source in sources:
        src = Path(source).expanduser()
        if src.is_file() and src.suffix.lower() == ".json" and src.resolve() in coco_files:
            continue  # the same COCO file named twice: its images once, not as duplicate ids
        if src.is_dir():
            own = next((e for e in skip if src.resolve().is_relative_to(e)), None)
            if own is not None:  # every image would be left out: say why, not "no input images"
                raise ValueError(f"input folder {src} is (or lies in) {own}, an output folder of this run "
                                 f"(--per-image / --work-dir), whose files are never read as inputs; choose output "
                                 f"folders apart from the input folders")
            found = _folder_images(src, recursive, skip)
        elif src.is_file() and src.suffix.lower() == ".txt":
            found = _list_file(src)
        elif src.is_file() and src.suffix.lower() == ".json":
            coco_files.add(src.resolve())
            for entry in _coco_file(src, root):
                order.append(("coco", len(coco)))
                coco.append(entry)
            continue
        elif src.is_file():
            found = [src]
        else:
            raise ValueError(f"input not found: {src}")
        for p in found:
            order.append(("plain", len(plain)))
            plain.append(p)
    missing = [str(p) for p, _, _ in coco if not p.is_file()] + [str(p) for p in plain if not p.is_file()]
    if missing:
        hint = " (set --image-root to the folder the COCO file names are relative to)" if coco else ""
        raise ValueError(f"{len(missing)} image(s) not found, first: {missing[0]}{hint}")
    ids = [i for _, _, i in coco]
    if len(set(ids)) != len(ids):
        raise ValueError("the COCO input has duplicate image ids")
    plain_abs = [p.resolve() for p in plain]
    if plain_abs:
        base = Path(os.path.commonpath([str(p.parent) for p in plain_abs]))
        if root is not None and all(p.is_relative_to(root) for p in plain_abs):
            base = root
    next_id = max(ids, default=0) + 1
    items: list[ImageItem] = []
    seen: set[str] = set()
    for kind, index in order:
        if kind == "coco":
            path, name, image_id = coco[index]
            path = str(path.resolve())
        else:
            p = plain_abs[index]
            path, name, image_id = str(p), p.relative_to(base).as_posix(), None
        if path in seen:
            continue
        seen.add(path)
        if image_id is None:
            image_id, next_id = next_id, next_id + 1
        items.append(ImageItem(path, name, image_id))
    if not items:
        raise ValueError("no input images (folders are searched for " + ", ".join(IMAGE_SUFFIXES) + ")")
    names = [it.file_name for it in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"two input images would get the same file_name {dup!r}; set --image-root to a folder above them")
    return items
