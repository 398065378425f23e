"""Foreground / background index and the loading rules the synthesiser applies to every file.

Follows CartoonSegmentation (arXiv 2312.01943, §3.1; CS ``animeinsseg/data/sampler.py`` L173-214 and
``utils/io_utils.py`` L214-223):

* a foreground must decode to 4 channels (RGBA); others are dropped from the list with a warning. Transparency
  given as a colour key (a PNG ``tRNS`` chunk on a palette, grey or RGB image: PIL's ``info["transparency"]``)
  counts: the keyed pixels become alpha 0, the rest alpha 255;
* **auto-crop to content**: blur alpha 5x5, threshold > 20, bounding rectangle; crop only when the image is
  more than 15 px larger than that rectangle in height or width;
* tags travel with each foreground (``tag_string``, ``tag_string_character``), as does ``category_id``;
* backgrounds are read as RGB: grey is expanded, alpha dropped.

Foreground folder format (written by ``train.make_fixtures``, ``train.chroma_key`` and
``train.filter_danbooru``): RGBA images (``.png``/``.webp``, searched recursively) plus an optional
``meta.jsonl`` with one JSON object per file, ``{"file": <path relative to the folder>, "tag_string": str,
"tag_string_character": str, "category_id": int, ...}``. A ``<image stem>.txt`` sidecar (comma- or
space-separated tags) is used when ``meta.jsonl`` has no entry. Images are RGB(A) ``uint8``.

The writers of such folders follow :mod:`cartoonseg.outputs` (atomic writes, never over a file cartoonseg did not
write unless ``overwrite``; an output folder must not be, lie inside or contain an input:
:func:`cartoonseg.outputs.check_outputs_apart`) and share :func:`merge_meta` (``meta.jsonl`` is merged, never
truncated: the lines of other files are kept as they are, the lines of the files a run writes are replaced).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..io import has_alpha, to_rgb_uint8, upright
from ..outputs import OutputFolder

__all__ = [
    "ForegroundInfo",
    "ForegroundError",
    "autocrop_box",
    "load_foreground",
    "load_background",
    "index_foregrounds",
    "index_backgrounds",
    "has_alpha_channel",
    "read_tag_file",
    "merge_meta",
    "imwrite",
    "META_FILE",
    "FG_EXTS",
    "BG_EXTS",
]

FG_EXTS = (".png", ".webp", ".tif", ".tiff")
BG_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: the per-folder metadata file (one JSON object per line, keyed by ``"file"``)
META_FILE = "meta.jsonl"


class ForegroundError(ValueError):
    """A foreground file that cannot be used (not RGBA, unreadable, or fully transparent)."""


@dataclasses.dataclass(frozen=True)
class ForegroundInfo:
    """One foreground: its file and the metadata copied into every annotation made from it.

    ``file`` is its path relative to the foreground folder (posix separators, the ``meta.jsonl`` key), set by
    :func:`index_foregrounds`; empty for a hand-made entry (annotations then name the file's basename).
    """

    path: str
    tag_string: str = ""
    tag_string_character: str = ""
    category_id: int = 0
    source: str = ""
    file: str = ""


def has_alpha_channel(path: str | Path) -> bool:
    """Whether an image file decodes to RGBA: an alpha band or a transparency colour key (reads only the header)."""
    try:
        with Image.open(path) as im:
            return has_alpha(im)
    except Exception:  # noqa: BLE001 - any decoder failure means "unusable"
        return False


def autocrop_box(alpha: np.ndarray, thr: int = 20, slack: int = 15) -> tuple[int, int, int, int] | None:
    """Content box ``(x0, y0, x1, y1)`` (exclusive ends) of an alpha ``uint8 [H,W]``, by the original rule:
    blur 5x5, ``> thr``, bounding rect; ``None`` when no crop is needed (the image is at most ``slack`` px
    larger than the rect in both H and W). Raises :class:`ForegroundError` when nothing is above ``thr``."""
    blurred = cv2.blur(alpha, (5, 5))
    pts = cv2.findNonZero((blurred > thr).astype(np.uint8))
    if pts is None:
        raise ForegroundError("foreground alpha is empty (nothing above the threshold after a 5x5 blur)")
    x, y, w, h = cv2.boundingRect(pts)
    H, W = alpha.shape
    if H - h > slack or W - w > slack:
        return x, y, x + w, y + h
    return None


def load_foreground(path: str | Path, crop: bool = True) -> np.ndarray:
    """Read a foreground as ``uint8 [H,W,4]`` RGBA, auto-cropped to its content.

    Raises:
        ForegroundError: the file is unreadable, has no alpha channel, or its alpha is empty.
    """
    try:
        with Image.open(path) as im:
            im.load()
            im = upright(im)  # EXIF orientation, as every image reader honours it (cartoonseg.io)
            if not has_alpha(im):
                raise ForegroundError(f"foreground {path} has mode {im.mode} and no transparency, not RGBA (an alpha "
                                      f"channel or a transparency colour key is required)")
            # one reader for every mode: an alpha band, or a colour key (tRNS) turned into alpha; 16-bit scaled
            rgba = to_rgb_uint8(im, alpha="keep")
            if rgba.shape[2] != 4:
                raise ForegroundError(f"foreground {path} (mode {im.mode}) did not decode to RGBA")
    except ForegroundError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ForegroundError(f"cannot read foreground {path}: {err}") from err
    if min(rgba.shape[:2]) < 2:
        raise ForegroundError(f"foreground {path} is too small: {rgba.shape[1]}x{rgba.shape[0]}")
    if crop:
        box = autocrop_box(rgba[..., 3])
        if box is not None:
            x0, y0, x1, y1 = box
            rgba = rgba[y0:y1, x0:x1]
    return np.ascontiguousarray(rgba)


def load_background(path: str | Path, min_short: int | None = None) -> np.ndarray:
    """Read a background as ``uint8 [H,W,3]`` RGB (grey expanded, 16-bit grey scaled to 8 bits, alpha dropped).

    Args:
        path: image file.
        min_short: when given, a JPEG may be decoded at a reduced scale (DCT draft mode) as long as its short
            side stays >= this; a large speed-up for multi-megapixel backgrounds.

    Raises:
        ValueError: unreadable or truncated file.
    """
    try:
        with Image.open(path) as im:
            if min_short is not None and im.format == "JPEG":
                w, h = im.size
                scale = max(1.0, min(w, h) / float(min_short))
                im.draft("RGB", (int(np.ceil(w / scale)), int(np.ceil(h / scale))))
            im.load()
            # 16-bit grey files scaled to 8 bits (PIL's convert("RGB") clips them at 255: a white picture)
            return np.array(to_rgb_uint8(upright(im)), order="C")  # a writable copy, alpha dropped
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise ValueError(f"cannot read background {path}: {err}") from err


def read_tag_file(path: str | Path) -> list[str]:
    """Tags from a sidecar text file: comma-separated (spaces inside a tag become ``_``) or whitespace-separated
    (UTF-8; a byte-order mark is dropped, so the first tag stays intact)."""
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace").strip()
    if "," in text:
        return [t.strip().replace(" ", "_") for t in text.split(",") if t.strip()]
    return text.split()


def merge_meta(folder: OutputFolder, records: Sequence[dict], name: str = META_FILE) -> Path | None:
    """Write ``records`` into ``folder``'s ``meta.jsonl`` (atomically, under the folder's output policy) without
    losing what is there: existing lines are kept byte for byte, except those whose ``"file"`` is one of the
    ``records``' files (a rerun replaces its own lines instead of repeating them). Returns the path, or None when
    there was nothing to write."""
    files = {str(r["file"]) for r in records}
    if len(files) != len(records):
        raise ValueError(f"{folder.path / name}: two metadata records name the same file")
    path = folder.path / name
    kept: list[bytes] = []
    if path.is_file():
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None  # not ours to judge: kept as it is
            if isinstance(rec, dict) and str(rec.get("file")) in files:
                continue
            kept.append(line)
    elif not records:
        return None
    new = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in records]
    return folder.write_bytes(name, b"".join(line + b"\n" for line in kept + new))


def imwrite(path: str | os.PathLike, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Write an RGB or RGBA ``uint8`` image with OpenCV (format from the suffix); ``OSError`` when it fails."""
    code = cv2.COLOR_RGBA2BGRA if image.ndim == 3 and image.shape[2] == 4 else cv2.COLOR_RGB2BGR
    if not cv2.imwrite(str(path), cv2.cvtColor(image, code), list(params)):
        raise OSError(f"could not write image {path}")


def _read_meta(folder: Path) -> dict[str, dict]:
    meta: dict[str, dict] = {}
    path = folder / META_FILE
    if path.is_file():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n} is not valid JSON: {err}") from err
            if "file" in rec:
                meta[str(rec["file"])] = rec
    return meta


def index_foregrounds(folder: str | Path, check_alpha: bool = True) -> list[ForegroundInfo]:
    """All usable foregrounds under ``folder`` (recursively, hidden files and folders left out), sorted by relative
    path.

    Files whose header shows no alpha channel are left out with one warning (the original removes them from
    the list when it first fails to read them).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"foreground folder not found: {folder}")
    meta = _read_meta(folder)
    out: list[ForegroundInfo] = []
    dropped: list[str] = []
    for p in _walk(folder):
        if p.suffix.lower() not in FG_EXTS:
            continue
        rel = p.relative_to(folder).as_posix()
        if check_alpha and not has_alpha_channel(p):
            dropped.append(rel)
            continue
        rec = meta.get(rel, {})
        tags = rec.get("tag_string")
        if tags is None and p.with_suffix(".txt").is_file():
            tags = " ".join(read_tag_file(p.with_suffix(".txt")))
        out.append(ForegroundInfo(
            path=str(p), tag_string=str(tags or ""), tag_string_character=str(rec.get("tag_string_character", "")),
            category_id=int(rec.get("category_id", 0)), source=str(rec.get("source", "")), file=rel))
    if dropped:
        warnings.warn(f"{len(dropped)} foreground file(s) without an alpha channel were skipped, e.g. {dropped[:3]}",
                      stacklevel=2)
    return out


def index_backgrounds(folder: str | Path) -> list[str]:
    """All background image files under ``folder`` (recursively, hidden ones left out), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"background folder not found: {folder}")
    return [str(p) for p in _walk(folder) if p.suffix.lower() in BG_EXTS]


def _walk(folder: Path) -> list[Path]:
    """The files under ``folder`` (recursively, sorted), without hidden ones or those in hidden folders: the
    temporaries of an interrupted writer (``.cartoonseg-tmp-*``), macOS ``._*`` companions, ``.synth_state``."""
    return [p for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
