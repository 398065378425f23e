"""Synthetic cartoon instance-segmentation dataset: composition, occlusion bookkeeping, COCO output, driver.

Re-implements CartoonSegmentation's ``syn_animecoco_dataset`` (arXiv 2312.01943, §3.2, Fig. 3; CS
``animeinsseg/data/syndataset.py``), which ships without a driver:

1. per image: a layout (``regular`` 0.4, ``personbbox`` 0.4, ``partition`` 0.2; without a person-box file the
   ``personbbox`` share is split between the other two in proportion), a background random resized crop, the
   layout's foregrounds (:mod:`cartoonseg.data.layouts`), a colour step (histogram matching 0.2 *before*
   pasting, k-means quantisation 0.25 *after*, none otherwise);
2. soft alpha compositing; the label of a foreground is ``alpha > 30``; later pastes overwrite earlier ones
   in an instance-id map, so each mask is what is visible;
3. **heavy-occlusion rule**: an instance with less than 25 % of its own label pixels visible (occluded or off
   the canvas, as in the original) is **dropped by re-compositing the image without it** (the original paints
   its leftover pixels grey; the spec proposes this instead). Removing a foreground can only reveal more of
   the others, so one pass is final. Instances with no visible pixel are always dropped;
4. annotations: visible mask as COCO RLE, ``bbox`` = bounding rect of the visible mask (xywh floats),
   ``area`` = visible pixel count, tags copied from the foreground.

Determinism: sample ``i`` draws everything from ``numpy.random.default_rng([seed, i, attempt])`` (an attempt
that fails, e.g. every instance occluded, is retried with ``attempt + 1``), so output does not depend on the
number of workers or on interruptions.

**Dataset format** (what the trainer reads)::

    OUT/annotations/det_<split>.json     COCO detection JSON (``split`` defaults to ``train``)
    OUT/<split>/<image_id:012d>.jpg      RGB JPEG images, size x size (quality 75/85/95 for train, 95 otherwise)
    OUT/.synth_state/<split>/            resume state (one record per finished image; safe to delete at the end)

``det_<split>.json``::

    {"info": {...}, "licenses": [],
     "categories": [{"id": 0, "name": "object", "supercategory": "object", "isthing": 1}],
     "images": [{"id", "width", "height", "file_name" (relative to OUT/<split>/), "layout", "colour"}],
     "annotations": [{"id" (from 1), "image_id", "category_id" (0 unless the foreground says otherwise),
                      "iscrowd": 0, "segmentation": {"size": [H, W], "counts": <compressed RLE string>},
                      "area" (visible pixels), "bbox": [x, y, w, h] (visible-mask box, floats),
                      "tag_string", "tag_string_character", "fg_file"}]}

``fg_file`` is the foreground's path relative to the foreground folder, with ``/`` separators (``sub/char.png``);
files written before it was (and annotations from a hand-made :class:`ForegroundInfo` without ``file``) hold the
basename only, which is the same thing for files at the top of the folder. A resumed older run has its records'
basenames upgraded to relative paths where the name is unique among the foregrounds.

A rerun resumes only with the settings and inputs of the run (``fingerprint.json``: every input by its path
relative to its folder, its byte size and a hash of its first and last 4 KiB, so a foreground moved to another
sub-folder, or two same-sized ones swapped, is another input set); a run started by an older version, which
compared basenames or no content, is resumed on that check (a warning where inputs lie in sub-folders and the
basenames were compared) and its fingerprint upgraded. ``fingerprint.json`` and ``det_<split>.json`` are flushed to
disk with their folder (fsync); the per-sample images and records are not, so a resume counts a sample done only when
its record and its image are non-empty, and draws one a power loss left empty again.

The single category is id 0 named ``object``, as in the original (its trainer selects classes by name).
Masks decode with ``pycocotools.mask.decode`` or :func:`cartoonseg.rle.decode`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from .. import rle
from ..outputs import check_outputs_apart, fsync_dir
from .augment import background_crop, harmonise_histograms, quantize_colours
from .coco_layouts import PersonBoxSampler, load_person_groups
from .foregrounds import (ForegroundError, ForegroundInfo, index_backgrounds, index_foregrounds,
                          load_background)
from .foregrounds import load_foreground
from .layouts import (LAYOUTS, Placement, PoissonCount, choose_foregrounds, layout_partition, layout_person_boxes,
                      layout_regular)

__all__ = [
    "SynthesisConfig",
    "PRESETS",
    "Sample",
    "composite",
    "Synthesizer",
    "synthesize_dataset",
    "IMAGE_ID_ZFILL",
    "CATEGORIES",
]

IMAGE_ID_ZFILL = 12
CATEGORIES = [{"id": 0, "name": "object", "supercategory": "object", "isthing": 1}]
_STATE = ".synth_state"


def _categories(annotations: list[dict]) -> list[dict]:
    """:data:`CATEGORIES`, plus one entry for every other ``category_id`` the foregrounds gave (``meta.jsonl``)."""
    ids = sorted({int(a["category_id"]) for a in annotations} - {c["id"] for c in CATEGORIES})
    return CATEGORIES + [{"id": i, "name": f"category_{i}", "supercategory": "object", "isthing": 1} for i in ids]


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """Synthesis settings (defaults = the released code; ``PRESETS["paper"]`` uses the paper's 720 canvas).

    Attributes:
        size: square canvas side in pixels (640 code default, 720 paper).
        split: ``train`` (random JPEG quality) or another name (quality 95); names the output files.
        layout_probs: probabilities of ``regular``, ``personbbox``, ``partition``.
        regular_lambda, regular_range: Poisson instance count of the row layout and its valid range.
        partition_lambda, partition_range: the same for the partition layout.
        regular_repeat_prob, person_repeat_prob: probability that a foreground repeats the previous one.
        hist_match_prob, quantize_prob: colour-step probabilities (mutually exclusive).
        quantize_ks: k-means colour counts.
        alpha_thr: a foreground pixel is labelled when its alpha (0-255) is above this.
        min_visible: drop an instance when less than this fraction of its own label pixels (the whole
            foreground's, so the part off the canvas counts as hidden) is visible.
        occlusion_layouts: layouts the occlusion rule applies to (the original exempts ``partition``; here it
            applies everywhere by default: a mostly hidden instance is a bad label in any layout).
        jpeg_qualities: JPEG qualities drawn for the ``train`` split.
        max_attempts: retries of a sample whose every instance was dropped or whose files failed to load.
    """

    size: int = 640
    split: str = "train"
    layout_probs: tuple[float, float, float] = (0.4, 0.4, 0.2)
    regular_lambda: float = 3.5
    regular_range: tuple[int, int] = (2, 9)
    partition_lambda: float = 2.5
    partition_range: tuple[int, int] = (1, 9)
    regular_repeat_prob: float = 0.15
    person_repeat_prob: float = 0.12
    hist_match_prob: float = 0.2
    quantize_prob: float = 0.25
    quantize_ks: tuple[int, ...] = (12, 16, 32)
    alpha_thr: int = 30
    min_visible: float = 0.25
    occlusion_layouts: tuple[str, ...] = LAYOUTS
    jpeg_qualities: tuple[int, ...] = (75, 85, 95)
    max_attempts: int = 20

    def __post_init__(self) -> None:
        if not 64 <= self.size <= 4096:
            raise ValueError(f"canvas size must be in [64, 4096] (640 or 720 for the paper), got {self.size}")
        if len(self.layout_probs) != 3 or min(self.layout_probs) < 0 or sum(self.layout_probs) <= 0:
            raise ValueError(
                f"layout_probs must be 3 non-negative numbers with a positive sum, got {self.layout_probs}")
        if not 0 <= self.hist_match_prob + self.quantize_prob <= 1:
            raise ValueError("hist_match_prob + quantize_prob must lie in [0, 1]")
        if not 0 <= self.min_visible <= 1:
            raise ValueError(f"min_visible must lie in [0, 1], got {self.min_visible}")
        if not self.split or any(c in self.split for c in "/\\") or self.split.startswith("."):
            raise ValueError(f"split must be a plain folder name, got {self.split!r}")
        unknown = set(self.occlusion_layouts) - set(LAYOUTS)
        if unknown:
            raise ValueError(f"unknown layouts in occlusion_layouts: {sorted(unknown)}; allowed {LAYOUTS}")


PRESETS: dict[str, SynthesisConfig] = {
    "code": SynthesisConfig(size=640),
    "paper": SynthesisConfig(size=720),
}


@dataclasses.dataclass
class Sample:
    """One synthesised image.

    Attributes:
        image: ``uint8 [S,S,3]`` RGB.
        idmap: ``int32 [S,S]``; 0 = background, ``k + 1`` = the k-th entry of ``placements`` (visible pixels).
        placements: the foregrounds kept, in paste order.
        annotations: per kept placement with visible pixels: ``{"placement", "fg_index", "bbox", "area",
            "segmentation"}``, in paste order.
        layout: layout name; colour: ``"hist_match"``, ``"quantize"`` or ``"none"``.
        dropped: the placements removed by the occlusion rule (with their original paste-order positions in
            ``dropped_positions``).
        background: the background crop after colour matching (before pasting).
    """

    image: np.ndarray
    idmap: np.ndarray
    placements: list[Placement]
    annotations: list[dict]
    layout: str
    colour: str
    dropped: list[Placement]
    dropped_positions: list[int]
    background: np.ndarray
    attempt: int = 0


def composite(background: np.ndarray, placements: Sequence[Placement], alpha_thr: int = 30
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alpha-composite foregrounds in order and keep the instance-id map.

    Args:
        background: ``uint8 [S,S,3]`` RGB.
        placements: paste order (first = furthest back).
        alpha_thr: label threshold on the 0-255 alpha.

    Returns:
        ``(image uint8 [S,S,3], idmap int32 [S,S], own int64 [N])`` where ``own[k]`` counts the on-canvas label
        pixels of placement ``k`` (before occlusion).
    """
    canvas = background.astype(np.float32)
    h, w = canvas.shape[:2]
    idmap = np.zeros((h, w), np.int32)
    own = np.zeros(len(placements), np.int64)
    for k, p in enumerate(placements):
        x0, y0, x1, y1 = p.box
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if cx0 >= cx1 or cy0 >= cy1:
            continue
        fg = p.rgba[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        a = fg[..., 3:4].astype(np.float32) / 255.0
        region = canvas[cy0:cy1, cx0:cx1]
        region += a * (fg[..., :3].astype(np.float32) - region)
        label = fg[..., 3] > alpha_thr
        idmap[cy0:cy1, cx0:cx1][label] = k + 1
        own[k] = int(label.sum())
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8), idmap, own


def _fg_file(info: ForegroundInfo) -> str:
    """An annotation's ``fg_file``: the foreground's path relative to its folder (basename without one)."""
    return info.file or os.path.basename(info.path)


def _upgrade_fg_files(annotations: list[dict], fgs: Sequence[ForegroundInfo]) -> None:
    """Resume records of an older run name foregrounds by basename: replaced in place by the relative path where
    that basename belongs to exactly one foreground (an ambiguous one stays as written)."""
    by_name: dict[str, list[str]] = {}
    for f in fgs:
        by_name.setdefault(os.path.basename(f.path), []).append(_fg_file(f))
    for a in annotations:
        name = a.get("fg_file")
        if isinstance(name, str) and "/" not in name and len(by_name.get(name, ())) == 1:
            a["fg_file"] = by_name[name][0]


def _fg_loader(fgs: Sequence[ForegroundInfo]):
    def load(i: int) -> np.ndarray:
        return load_foreground(fgs[i].path)
    return load


class Synthesizer:
    """Makes samples from a foreground list, a background list and optional COCO person-box groups.

    Args:
        foregrounds: :class:`ForegroundInfo` list (:func:`cartoonseg.data.foregrounds.index_foregrounds`).
        backgrounds: background image paths.
        cfg: settings.
        seed: base seed; sample ``i`` is a pure function of ``(seed, i)`` and the inputs.
        person_groups: normalised person-box groups (:func:`load_person_groups`), or ``None`` to disable the
            ``personbbox`` layout (its probability goes to the other two, in proportion).
    """

    def __init__(self, foregrounds: Sequence[ForegroundInfo], backgrounds: Sequence[str],
                 cfg: SynthesisConfig = SynthesisConfig(), seed: int = 0,
                 person_groups: Sequence[np.ndarray] | None = None):
        if not foregrounds:
            raise ValueError("no usable foregrounds (RGBA files) were given")
        if not backgrounds:
            raise ValueError("no backgrounds were given")
        self.fgs = list(foregrounds)
        self.bgs = list(backgrounds)
        self.cfg = cfg
        self.seed = int(seed)
        self.person = PersonBoxSampler(list(person_groups)) if person_groups else None
        if self.person is not None and cfg.layout_probs[1] > 0:  # groups that can never give a box: refused now
            self.person.sample(np.random.default_rng(0), cfg.size)
        probs = np.array(cfg.layout_probs, np.float64)
        if self.person is None:
            probs[1] = 0.0
        if probs.sum() <= 0:
            raise ValueError("layout probabilities leave nothing to draw (personbbox needs --person-boxes)")
        self.layout_probs = probs / probs.sum()
        self.regular_count = PoissonCount(cfg.regular_lambda, *cfg.regular_range, seed=self.seed)
        self.partition_count = PoissonCount(cfg.partition_lambda, *cfg.partition_range, seed=self.seed)
        self._load = _fg_loader(self.fgs)

    # -------------------------------------------------------------------------------------------- sampling
    def rng(self, index: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index), int(attempt)])

    def make_layout(self, rng: np.random.Generator) -> tuple[str, list[Placement]]:
        """Draw a layout name and its placements."""
        cfg = self.cfg
        name = LAYOUTS[int(rng.choice(3, p=self.layout_probs))]
        if name == "regular":
            ids = choose_foregrounds(rng, self.regular_count.sample(rng), len(self.fgs), cfg.regular_repeat_prob)
            return name, layout_regular(rng, ids, self._load, cfg.size)
        if name == "personbbox":
            return name, layout_person_boxes(rng, self.person, len(self.fgs), self._load, cfg.size,
                                             repeat_prob=cfg.person_repeat_prob)
        ids = [int(rng.integers(len(self.fgs))) for _ in range(self.partition_count.sample(rng))]
        return name, layout_partition(rng, ids, self._load, cfg.size)

    def sample(self, index: int) -> Sample:
        """Synthesise sample ``index`` (retrying deterministically; ``ValueError`` after ``max_attempts``)."""
        last_err: Exception | None = None
        for attempt in range(self.cfg.max_attempts):
            try:
                s = self._attempt(self.rng(index, attempt))
            except ForegroundError as err:  # an unusable source file: try another draw
                last_err = err
                continue
            if s.annotations:
                s.attempt = attempt
                return s
        raise ValueError(f"sample {index}: no usable image after {self.cfg.max_attempts} attempts; check the "
                         f"foreground and background folders" + (f" (last error: {last_err})" if last_err else ""))

    def _attempt(self, rng: np.random.Generator) -> Sample:
        cfg = self.cfg
        bg_path = self.bgs[int(rng.integers(len(self.bgs)))]
        try:
            bg_img = load_background(bg_path, min_short=int(1.2 * cfg.size))
        except ValueError as err:
            raise ForegroundError(str(err)) from err
        try:
            bg = background_crop(bg_img, rng, cfg.size)
        except ValueError as err:  # e.g. a strip too long to upscale: unusable like an unreadable file
            raise ForegroundError(f"background {bg_path}: {err}") from err
        layout, placements = self.make_layout(rng)
        u = float(rng.random())
        colour = "hist_match" if u < cfg.hist_match_prob else (
            "quantize" if u < cfg.hist_match_prob + cfg.quantize_prob else "none")
        if colour == "hist_match" and placements:
            bg, new = harmonise_histograms(bg, [p.rgba for p in placements])
            placements = [dataclasses.replace(p, rgba=f) for p, f in zip(placements, new)]
        image, idmap, _ = composite(bg, placements, cfg.alpha_thr)
        visible = np.bincount(idmap.ravel(), minlength=len(placements) + 1)[1:]
        # the share of the whole foreground's label pixels (as the original): a character hanging 80 % off the
        # canvas is a sliver, not an instance, however visible that sliver is
        full = np.array([int((p.rgba[..., 3] > cfg.alpha_thr).sum()) for p in placements], np.int64)
        frac = visible / np.maximum(full, 1)
        rule = layout in cfg.occlusion_layouts
        drop = [k for k in range(len(placements)) if visible[k] == 0 or (rule and frac[k] < cfg.min_visible)]
        dropped = [placements[k] for k in drop]
        if drop:
            placements = [p for k, p in enumerate(placements) if k not in set(drop)]
            image, idmap, own = composite(bg, placements, cfg.alpha_thr)
        if colour == "quantize":
            image = quantize_colours(image, idmap, rng, ks=cfg.quantize_ks)
        anns = []
        for k, p in enumerate(placements):
            mask = idmap == k + 1
            area = int(mask.sum())
            if area == 0:
                continue
            x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
            anns.append({"placement": k, "fg_index": p.fg_index, "bbox": [float(x), float(y), float(w), float(h)],
                         "area": area, "segmentation": rle.encode(mask)})
        return Sample(image=image, idmap=idmap, placements=placements, annotations=anns, layout=layout,
                      colour=colour, dropped=dropped, dropped_positions=drop, background=bg)

    # ---------------------------------------------------------------------------------------------- output
    def record(self, index: int, image_id: int, sample: Sample, file_name: str) -> dict:
        """JSON-able record of a sample (COCO image entry + annotations without ids)."""
        anns = []
        for a in sample.annotations:
            info = self.fgs[a["fg_index"]]
            anns.append({"image_id": image_id, "category_id": info.category_id, "iscrowd": 0,
                         "segmentation": a["segmentation"], "area": a["area"], "bbox": a["bbox"],
                         "tag_string": info.tag_string, "tag_string_character": info.tag_string_character,
                         "fg_file": _fg_file(info)})
        image = {"id": image_id, "width": self.cfg.size, "height": self.cfg.size, "file_name": file_name,
                 "layout": sample.layout, "colour": sample.colour}
        return {"index": index, "image": image, "annotations": anns}

    def jpeg_quality(self, index: int) -> int:
        if self.cfg.split != "train":
            return 95
        return int(np.random.default_rng([self.seed, int(index), 99991]).choice(self.cfg.jpeg_qualities))


# ============================================================================================ the driver
_WORKER: dict = {}


def _init_pool_worker(state: dict) -> None:
    """A pool process: Ctrl-C is the parent's, which stops the pool (no traceback per worker). Never called in the
    caller's own process (workers=1), whose Ctrl-C must keep working."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(state)


def _init_worker(state: dict) -> None:
    cv2.setNumThreads(1)
    _WORKER.clear()
    _WORKER.update(state)
    _WORKER["synth"] = Synthesizer(state["fgs"], state["bgs"], state["cfg"], state["seed"], state["person_groups"])


_TMP_SUFFIX = ".tmp"  # _atomic_write's temporary: ``<final name>.tmp<pid>``


def _atomic_write(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``path`` through a temporary and a rename. ``durable``: also flush it and the rename to disk, for the few
    files a power loss must not leave empty (the fingerprint, which a resume must read, and the annotations); the
    per-sample images and records are not (an fsync each would cost more than drawing them): a resume redoes a sample
    whose record or image a crash left empty (:func:`_sample_done`)."""
    tmp = path.with_name(f"{path.name}{_TMP_SUFFIX}{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def _sample_done(record: Path, image: Path) -> bool:
    """Whether a sample of an earlier run is complete: its record (written last) and its image exist and are not
    empty (a power loss can leave a renamed but never flushed file empty; that sample is drawn again)."""
    try:
        return record.stat().st_size > 0 and image.stat().st_size > 0
    except OSError:
        return False


def _read_fingerprint(path: Path, overwrite: bool) -> dict | None:
    """The fingerprint an earlier run wrote at ``path``; None when there is none, or (with ``overwrite``) when it
    cannot be read. An unreadable one (emptied by a crash or a full disk, edited) raises ``ValueError`` naming it:
    the run there cannot be resumed, and --overwrite starts it over."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
    except (OSError, ValueError) as exc:
        if overwrite:
            return None
        raise ValueError(f"{path} is not a readable synthesis fingerprint ({exc}), so the run in {path.parents[2]} "
                         f"cannot be resumed; use another --out, or --overwrite to start it over") from None
    return data


def _remove_own_temporaries(out: Path, split: str) -> None:
    """Delete the temporaries a killed run of :func:`_atomic_write` left: exactly ``<image>.jpg.tmp<pid>`` in
    ``OUT/<split>/``, ``<record or fingerprint>.json.tmp<pid>`` in the state folder and ``det_<split>.json.tmp<pid>``
    in ``OUT/annotations/``. Anything else there (``notes.tmp.txt``) is the user's and stays."""
    tmp = re.escape(_TMP_SUFFIX) + r"\d+"
    patterns = {out / split: rf"\d{{{IMAGE_ID_ZFILL},}}\.jpg{tmp}",
                out / _STATE / split: rf"(?:\d{{9,}}|fingerprint)\.json{tmp}",
                out / "annotations": rf"det_{re.escape(split)}\.json{tmp}"}
    for folder, pattern in patterns.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if re.fullmatch(pattern, entry.name) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)


def _run_one(index: int) -> int:
    synth: Synthesizer = _WORKER["synth"]
    out: Path = _WORKER["out"]
    state: Path = _WORKER["state"]
    image_id = _WORKER["image_id_start"] + index
    name = f"{image_id:0{IMAGE_ID_ZFILL}d}.jpg"
    sample = synth.sample(index)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, synth.jpeg_quality(index)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for sample {index}")
    _atomic_write(out / synth.cfg.split / name, buf.tobytes())
    rec = synth.record(index, image_id, sample, name)
    _atomic_write(state / f"{index:09d}.json", json.dumps(rec).encode("utf-8"))  # written last = done marker
    return index


def _digest(items: Sequence) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(repr(it).encode("utf-8"))
    return h.hexdigest()[:16]


def _file_size(path: str | os.PathLike) -> int | None:
    """A file's size in bytes for the run's fingerprint (None when it cannot be read: the sample says so later)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _input_name(path: str, root: str | os.PathLike | None) -> str:
    """How the fingerprint names an input file: its path relative to the input folder (posix separators), or its
    basename for inputs given as a list. No absolute path: a moved or copied input folder still resumes."""
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return Path(path).name


#: how much of each input's start and end the fingerprint hashes (:func:`_head_tail_digest`)
_FINGERPRINT_SPAN = 4 * 1024
#: the fingerprint versions: 1 basenames and sizes, 2 relative paths and sizes, 3 also each file's head and tail
FINGERPRINT_VERSION = 3


def _head_tail_digest(path: str | os.PathLike) -> str | None:
    """SHA-256 (16 hex digits) of a file's first and last 4 KiB (the whole file when smaller): a cheap content
    check (two reads a file, however large) that tells apart two different images of one name and size, e.g. two
    same-sized foregrounds swapped between sub-folders. None when it cannot be read (the sample says so later)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            h.update(fh.read(_FINGERPRINT_SPAN))
            if size > 2 * _FINGERPRINT_SPAN:
                fh.seek(size - _FINGERPRINT_SPAN)
            h.update(fh.read())
    except OSError:
        return None
    return h.hexdigest()[:16]


def _fingerprint(cfg: SynthesisConfig, seed: int, image_id_start: int, fgs: Sequence[ForegroundInfo],
                 bgs: Sequence[str], bg_root, groups, *, version: int = FINGERPRINT_VERSION) -> dict:
    """What a resume must match (``fingerprint.json``): settings, and every input by name, byte size and a hash of
    its first and last 4 KiB (files rewritten under their names, e.g. a chroma_key rerun with other settings, or
    two same-sized files swapped between sub-folders, make another run, not a resume that mixes old and new
    samples; a hash, not a time stamp, so a copied input folder still resumes). Names are paths relative to the
    input folder (``"names": "relative"``: a foreground moved between sub-folders is another input set, whose
    annotations name other ``fg_file`` s). ``version`` gives the fingerprints of older versions
    (:data:`FINGERPRINT_VERSION`): 1 basenames and sizes, 2 relative paths and sizes (no ``"content"`` key)."""
    fg_name = (lambda f: Path(f.path).name) if version == 1 else _fg_file
    bg_name = (lambda b: Path(b).name) if version == 1 else (lambda b: _input_name(b, bg_root))
    fg_content: list = []
    bg_content: list = []
    if version >= 3:  # threads: file-system latency, not CPU, is the cost
        with ThreadPoolExecutor(8) as pool:
            fg_content = list(pool.map(_head_tail_digest, [f.path for f in fgs]))
            bg_content = list(pool.map(_head_tail_digest, bgs))
    fingerprint = {
        "config": dataclasses.asdict(cfg), "seed": int(seed), "image_id_start": int(image_id_start),
        "foregrounds": _digest([(fg_name(f), _file_size(f.path), f.tag_string, f.tag_string_character,
                                 f.category_id) + ((fg_content[i],) if version >= 3 else ())
                                for i, f in enumerate(fgs)]),
        "backgrounds": _digest([(bg_name(b), _file_size(b)) + ((bg_content[i],) if version >= 3 else ())
                                for i, b in enumerate(bgs)]),
        "person_boxes": _digest([np.round(g, 6).tolist() for g in groups]) if groups else None,
    }
    if version >= 2:
        fingerprint["names"] = "relative"
    if version >= 3:
        fingerprint["content"] = "head+tail 4 KiB"
    return json.loads(json.dumps(fingerprint))


def _legacy_names_differ(fgs: Sequence[ForegroundInfo], bgs: Sequence[str], bg_root) -> bool:
    """Whether an input lies in a sub-folder (where the older basename fingerprint is weaker than this one)."""
    return (any(_fg_file(f) != Path(f.path).name for f in fgs)
            or any(_input_name(b, bg_root) != Path(b).name for b in bgs))


def synthesize_dataset(fg: str | Path | Sequence[ForegroundInfo], bg: str | Path | Sequence[str], out_dir: str | Path,
                       num: int, cfg: SynthesisConfig = SynthesisConfig(), seed: int = 0, workers: int = 1,
                       person_boxes: str | Path | None = None, image_id_start: int = 0, progress: bool = True,
                       overwrite: bool = False) -> dict:
    """Synthesise ``num`` images into ``out_dir`` (format in the module docstring), resuming if possible.

    Finished samples are recorded under ``OUT/.synth_state/<split>/``; a rerun with the same inputs, config and
    seed skips them, redoes anything unfinished and rewrites the COCO JSON, so an interrupted run loses nothing
    and duplicates nothing. ``num`` may grow between runs (extending the dataset). Different inputs or settings
    in a non-empty state raise ``ValueError`` unless ``overwrite=True``. An ``out_dir`` that is, lies inside or
    contains the ``fg``/``bg`` folder is refused (``ValueError``) before anything is written: the next run would
    read the dataset's JPEGs as inputs. A rerun removes only its own temporaries (``<name>.tmp<pid>``).

    Args:
        fg: foreground folder (or a ready :class:`ForegroundInfo` list).
        bg: background folder (or a list of paths).
        out_dir: output root.
        num: number of images (98,600 reproduces the paper's dataset size).
        cfg: settings (see :data:`PRESETS`).
        seed: base seed.
        workers: processes (1 = in this process).
        person_boxes: person-box JSON from ``train.coco_person_boxes`` (enables the ``personbbox`` layout).
        image_id_start: id of sample 0 (to build disjoint splits).
        progress: show a tqdm progress bar (on stderr, only when it is a terminal).
        overwrite: discard an incompatible state instead of raising, and write into a non-empty folder that holds
            no synthesis run (without it, that raises ``ValueError``: never write among files we did not write).

    Returns:
        ``{"annotations": path, "images": n, "instances": n, "new": n, "seconds": s, "images_per_s": r}``.
    """
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    # a dataset inside (or around) its inputs would be read back as foregrounds/backgrounds (both indexes search
    # recursively) by the next run: refused before anything is read or written
    folders = [p for p in (fg, bg) if isinstance(p, (str, os.PathLike))]
    check_outputs_apart([out], folders)
    fgs = index_foregrounds(fg) if isinstance(fg, (str, Path)) else list(fg)
    bgs = index_backgrounds(bg) if isinstance(bg, (str, Path)) else [str(b) for b in bg]
    if len(folders) < 2:  # files given as lists: none of them inside the output either
        check_outputs_apart([out], [*([] if isinstance(fg, (str, os.PathLike)) else [f.path for f in fgs]),
                                    *([] if isinstance(bg, (str, os.PathLike)) else bgs)])
    groups = load_person_groups(person_boxes) if person_boxes else None
    state = out / _STATE / cfg.split
    if out.is_dir() and not (out / _STATE).is_dir() and any(out.iterdir()) and not overwrite:  # the output policy
        raise ValueError(f"{out} is not empty and holds no dataset synthesis run ({_STATE}/ is missing); use a new "
                         f"or empty --out, or --overwrite (files there are kept, same-named ones replaced)")
    # the inputs are checked here, once, before anything is written: a worker process that failed this check in
    # its pool initializer would be replaced by the pool again and again (a hang, a traceback per try)
    Synthesizer(fgs, bgs, cfg, seed, groups)
    (out / cfg.split).mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    bg_root = bg if isinstance(bg, (str, os.PathLike)) else None
    fingerprint = _fingerprint(cfg, seed, image_id_start, fgs, bgs, bg_root, groups)
    fp_path = state / "fingerprint.json"
    old = _read_fingerprint(fp_path, overwrite)
    if old is None and fp_path.is_file():  # unreadable, and --overwrite: the run starts over
        for p in state.glob("*.json"):
            p.unlink()
    elif old is not None:
        version = 3 if "content" in old else 2 if "names" in old else 1
        ours = fingerprint
        if version < FINGERPRINT_VERSION:  # an older version's run: compared by the fingerprint it wrote
            ours = _fingerprint(cfg, seed, image_id_start, fgs, bgs, bg_root, groups, version=version)
        if old != fingerprint and old == ours:
            if version == 1 and _legacy_names_differ(fgs, bgs, bg_root):  # only then can it have missed a move
                warnings.warn(
                    f"{out} was started by an older cartoonseg, which told inputs apart by file name and size only; "
                    "it is resumed on that check (this version also compares the paths in sub-folders). If "
                    "foregrounds or backgrounds were moved between sub-folders since, start again with --overwrite "
                    "or another --out", stacklevel=2)
            old = fingerprint  # the same inputs by the check the run was started with: upgraded below
        if old != fingerprint:
            if not overwrite:
                diff = sorted(k for k in ours if old.get(k) != ours[k])
                raise ValueError(f"{out} holds a run with different {diff}; use another --out or --overwrite")
            for p in state.glob("*.json"):
                p.unlink()
    _atomic_write(fp_path, json.dumps(fingerprint, indent=1).encode("utf-8"), durable=True)
    _remove_own_temporaries(out, cfg.split)  # half-written files of a killed run (and nothing else)

    done = set()
    for i in range(num):
        if _sample_done(state / f"{i:09d}.json", out / cfg.split / f"{image_id_start + i:0{IMAGE_ID_ZFILL}d}.jpg"):
            done.add(i)
    todo = [i for i in range(num) if i not in done]
    worker_state = {"fgs": fgs, "bgs": bgs, "cfg": cfg, "seed": int(seed), "person_groups": groups, "out": out,
                    "state": state, "image_id_start": int(image_id_start)}
    start = time.perf_counter()
    bar = None
    if progress and sys.stderr.isatty():  # a bar in a log file or a pipe is only noise
        from tqdm import tqdm

        bar = tqdm(total=num, initial=len(done), unit="img", desc=f"synthesising {cfg.split}", file=sys.stderr,
                   dynamic_ncols=True)
    try:
        if todo and workers == 1:
            _init_worker(worker_state)
            for i in todo:
                _run_one(i)
                if bar is not None:
                    bar.update(1)
        elif todo:
            env_keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            saved = {k: os.environ.get(k) for k in env_keys}
            os.environ.update({k: "1" for k in env_keys})
            try:
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(workers, initializer=_init_pool_worker, initargs=(worker_state,)) as pool:
                    for _ in pool.imap_unordered(_run_one, todo, chunksize=1):
                        if bar is not None:
                            bar.update(1)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start

    images, annotations = [], []
    for i in range(num):
        rec = json.loads((state / f"{i:09d}.json").read_text())
        images.append(rec["image"])
        _upgrade_fg_files(rec["annotations"], fgs)
        for a in rec["annotations"]:
            annotations.append({"id": len(annotations) + 1, **a})
    coco = {
        "info": {"description": "CartoonSeg synthetic instance segmentation (arXiv 2312.01943 §3.2)",
                 "seed": int(seed), "num_images": num, "config": dataclasses.asdict(cfg)},
        "licenses": [],
        "categories": _categories(annotations),
        "images": images,
        "annotations": annotations,
    }
    ann_path = out / "annotations" / f"det_{cfg.split}.json"
    _atomic_write(ann_path, json.dumps(coco).encode("utf-8"), durable=True)
    return {"annotations": str(ann_path), "images": len(images), "instances": len(annotations),
            "new": len(todo), "seconds": seconds, "images_per_s": (len(todo) / seconds) if seconds > 0 else 0.0}
