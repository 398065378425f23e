"""Reading COCO instance annotations for training (CartoonSegmentation's dataset format, pipeline_spec §2.6).

A COCO ``instances`` JSON (``images``, ``annotations``, ``categories``) whose ``segmentation`` is an RLE
(compressed string or uncompressed list counts) or a polygon list. Rules taken from the original
``LoadAnnotationsNoSeg`` (CS ``animeinsseg/data/dataset.py``):

* an instance **without a usable segmentation** (box-only data such as Manga109 pages) gets its filled box as
  mask and ``ignore_mask = True``: it is trained with box and class losses only;
* ``iscrowd`` annotations are not trained on;
* images whose id is above 900,000,000 are manga pages (the original's convention), used by the mosaic rules;
* categories are mapped to contiguous labels ``0..C-1`` in ascending category-id order;
* an annotation may carry ``pred_segmentations`` (stage-1 predictions, RLE list) for refiner training.

:func:`check_images` looks at every listed image once before training (headers and file ends, no decoding; with
``full=True`` every image is also decoded), so a corrupt file stops the run at its start instead of when it is first
sampled, possibly hours in.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .. import rle as rle_utils

if TYPE_CHECKING:
    from .distributed import DistContext

__all__ = [
    "MANGA_ID_OFFSET",
    "CocoAnnotation",
    "CocoImage",
    "CocoSet",
    "CHECK_IMAGES_MODES",
    "check_images",
    "check_images_mode",
    "find_annotation",
    "instance_masks",
    "load_coco",
    "read_image_bgr",
]

MANGA_ID_OFFSET = 900_000_000


@dataclass
class CocoAnnotation:
    """One ground-truth instance.

    Attributes:
        box: xyxy float in image pixels.
        label: contiguous class index.
        segmentation: the raw COCO ``segmentation`` value (None when absent).
        pred_segmentations: stage-1 predictions attached for refiner training (raw COCO values).
    """

    box: tuple[float, float, float, float]
    label: int
    segmentation: Any
    pred_segmentations: list[Any] = field(default_factory=list)
    ann_id: int = -1


@dataclass
class CocoImage:
    image_id: int
    path: Path
    height: int
    width: int
    annotations: list[CocoAnnotation]

    @property
    def is_manga(self) -> bool:
        return self.image_id > MANGA_ID_OFFSET


@dataclass
class CocoSet:
    """A parsed COCO file: images (with their non-crowd annotations) and the category mapping."""

    images: list[CocoImage]
    category_ids: list[int]
    category_names: list[str]
    raw: dict[str, Any]
    image_root: Path

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)


def _resolve(root_candidates: list[Path], file_name: str) -> Path:
    for root in root_candidates:
        p = root / file_name
        if p.is_file():
            return p
    return root_candidates[0] / file_name


def load_coco(ann_file: str | Path, image_root: str | Path | None = None, *, require_images: bool = True) -> CocoSet:
    """Parse a COCO instances JSON.

    Args:
        ann_file: path of the JSON.
        image_root: folder the ``file_name`` entries are relative to. When None, tried in order: the JSON's
            folder, its parent, ``<parent>/images`` and ``<parent>/<json stem>`` (with a leading ``det_`` or
            ``instances_`` removed, the original's ``annotations/det_{policy}.json`` + ``{policy}/`` layout).
        require_images: raise FileNotFoundError when an image file is missing.

    Raises:
        ValueError: the file is not a COCO instances dict or has no images.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        with ann_file.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except ValueError as exc:  # damaged JSON or text (UnicodeDecodeError): name the file, not only a position
        raise ValueError(f"{ann_file} is not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations"), list):
        raise ValueError(f"{ann_file} is not a COCO instances file (needs the lists 'images' and 'annotations')")
    where = ["the categories"]  # the record being parsed, for the message of a malformed file
    try:
        return _parse_coco(ann_file, data, image_root, require_images, where)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(f"{ann_file}:"):
            raise  # our own message
        what = f"lacks the field {exc}" if isinstance(exc, KeyError) else f"has a malformed field ({exc})"
        raise ValueError(f"{ann_file}: {where[0]} {what}") from None


def _parse_coco(ann_file: Path, data: dict[str, Any], image_root: str | Path | None, require_images: bool,
                where: list[str]) -> CocoSet:
    if image_root is not None:
        roots = [Path(image_root)]
    else:
        stem = ann_file.stem
        for prefix in ("det_", "instances_"):
            stem = stem.removeprefix(prefix)
        parent = ann_file.parent.parent
        roots = [ann_file.parent, parent, parent / "images", parent / stem, ann_file.parent / "images"]
    cats = data.get("categories") or [
        {"id": c, "name": str(c)} for c in sorted({a["category_id"] for a in data["annotations"]})
    ]
    cats = sorted(cats, key=lambda c: int(c["id"]))
    cat_ids = [int(c["id"]) for c in cats]
    cat_to_label = {cid: i for i, cid in enumerate(cat_ids)}
    where[0] = "an image"
    per_image: dict[int, list[CocoAnnotation]] = {int(im["id"]): [] for im in data["images"]}
    for i, ann in enumerate(data["annotations"]):
        where[0] = f"annotation {ann.get('id', f'#{i}') if isinstance(ann, dict) else f'#{i}'}"
        if ann.get("iscrowd", 0):
            continue
        img_id = int(ann["image_id"])
        if img_id not in per_image:
            continue
        cid = int(ann["category_id"])
        if cid not in cat_to_label:
            raise ValueError(f"{ann_file}: annotation {ann.get('id')} has category_id {cid} not in categories "
                             f"{cat_ids}")
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            continue
        per_image[img_id].append(
            CocoAnnotation(
                box=(x, y, x + w, y + h),
                label=cat_to_label[cid],
                segmentation=ann.get("segmentation"),
                pred_segmentations=list(ann.get("pred_segmentations") or []),
                ann_id=int(ann.get("id", -1)),
            )
        )
    images = []
    where[0] = "the first image"
    if data["images"]:
        first = data["images"][0]["file_name"]
        roots = sorted(roots, key=lambda r: not (r / first).is_file())  # stable: the root holding images first
    for i, im in enumerate(data["images"]):
        where[0] = f"image {im.get('id', f'#{i}') if isinstance(im, dict) else f'#{i}'}"
        path = _resolve(roots, im["file_name"])
        if require_images and not path.is_file():
            raise FileNotFoundError(f"image {im['file_name']!r} of {ann_file} not found under any of {roots}")
        image = CocoImage(int(im["id"]), path, int(im["height"]), int(im["width"]), per_image[int(im["id"])])
        for ann in image.annotations:
            _check_segmentation_shape(ann, image, ann_file)
        images.append(image)
    if not images:
        raise ValueError(f"{ann_file}: has no images")
    return CocoSet(images, cat_ids, [str(c.get("name", c["id"])) for c in cats], data, roots[0])


def _check_segmentation_shape(ann: CocoAnnotation, image: CocoImage, ann_file: Path) -> None:
    """Cheap structural check of a segmentation at load time (the full decode happens per sample, and raises too):
    a corrupt dataset stops before training instead of silently training box-only."""
    seg = ann.segmentation
    if seg is None or (isinstance(seg, (list, tuple, dict)) and not seg):
        return
    problem = None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(size, (list, tuple)) or [v for v in size] != [image.height, image.width]:
            problem = f"RLE size {size!r} is not the image size {[image.height, image.width]}"
        elif not isinstance(counts, (str, list)):
            problem = f"RLE counts must be a string or a list, got {type(counts).__name__}"
    elif not isinstance(seg, (list, tuple)) or not all(isinstance(p, (list, tuple)) for p in seg):
        problem = f"segmentation must be an RLE dict or a list of polygons, got {type(seg).__name__}"
    if problem:
        raise ValueError(f"{ann_file}: annotation {ann.ann_id} of image {image.image_id} has a corrupt segmentation: "
                         f"{problem}")


#: formats whose header Pillow reads (a file of these that it cannot open is corrupt); others pass that step
_PIL_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: how far from a file's end its end marker may lie (JPEG EOI, PNG IEND): padding or a small trailer is tolerated
_TAIL = 4096


#: the values of ``check_images`` in the training configs (``--check-images``): header and end only, also a full
#: decode, or no check
CHECK_IMAGES_MODES = ("fast", "full", "none")


def check_images_mode(value: bool | str) -> str:
    """The check a training config's ``check_images`` asks for: one of :data:`CHECK_IMAGES_MODES` (True is
    ``"fast"``, False ``"none"``)."""
    if value is True or value is False:
        return "fast" if value else "none"
    if value not in CHECK_IMAGES_MODES:
        raise ValueError(f"check_images must be one of {list(CHECK_IMAGES_MODES)} (or True/False), got {value!r}")
    return value


def _image_problem(image: CocoImage, full: bool = False) -> str | None:
    """Why ``image`` would fail (or be misread) when sampled, or None; reads its header and its last bytes only,
    unless ``full`` (then it also decodes the file as the trainers do)."""
    problem = _header_problem(image)
    if problem is None and full and cv2.imread(str(image.path), cv2.IMREAD_COLOR) is None:
        return "cannot be decoded (damaged data inside the file)"
    return problem


def _header_problem(image: CocoImage) -> str | None:
    from PIL import Image

    path = image.path
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "is an empty file"
    if not cv2.haveImageReader(str(path)):
        return "is not an image OpenCV can decode (unknown or damaged header)"
    if path.suffix.lower() not in _PIL_SUFFIXES:
        return None
    try:
        with Image.open(path) as im:
            w, h, fmt = im.width, im.height, im.format
            try:
                turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # OpenCV applies EXIF orientation
            except Exception:  # noqa: BLE001 - a malformed EXIF block is ignored, as the readers do
                turned = False
        with open(path, "rb") as fh:
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged headers
        return f"has an unreadable header ({exc})"
    if (image.width, image.height) not in ((w, h), (h, w) if turned else (w, h)):
        return f"is {w}x{h} but the annotation file says {image.width}x{image.height}"
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        return "is truncated (no JPEG end marker)"
    if fmt == "PNG" and b"IEND" not in tail:
        return "is truncated (no PNG end chunk)"
    return None


def check_images(images: Sequence[CocoImage], *, progress: bool = True, show: int = 10, threads: int = 8,
                 full: bool = False, ctx: DistContext | None = None) -> None:
    """Check once, before training, that every image in ``images`` will load as its annotations expect.

    Per file: it exists and is not empty, OpenCV recognises its header (``cv2.haveImageReader``), Pillow reads its
    header (size, EXIF orientation) and the size matches the COCO ``width``/``height`` (either way round under
    an EXIF rotation, as OpenCV turns such files), and a JPEG/PNG ends with its end marker (in the last 4 KiB): a
    file cut short by an interrupted copy. Only headers and the last 4 KiB are read, nothing is decoded: about
    0.1-0.3 ms a file from a local disk (30 s or less for 100k images), read by ``threads`` threads. Damage inside
    the compressed data of a complete file is found only with ``full`` (``--check-images full``), which also decodes
    every file once with the trainers' reader (OpenCV), a few ms an image: a PNG or WebP whose data is damaged fails
    there. A JPEG with damaged data is decoded by OpenCV with grey blocks, as the trainers (and the original's
    mmcv reader) then train on it: no check reports it.

    Under ``torchrun`` (``ctx`` of more than one process; every rank calls this with the same ``images``) the
    decoding is shared: each rank decodes only every ``world_size``-th image (its share, ``index % world_size ==
    rank``), so a job decodes each file once, not once per process; the cheap header check still runs on every
    rank for every file (a file missing or different on one node's storage is found there). The ranks' findings
    are then gathered, and every rank raises the same error naming every bad file, wherever it was found: no rank
    trains on while another stops.

    Args:
        images: the images to check (``CocoSet.images`` or the subset a dataset reads).
        progress: a tqdm bar on stderr (shown only when it is a terminal).
        show: how many bad files the error lists.
        threads: reader threads (file system latency, not CPU, is the cost; decoding releases the GIL too).
        full: also decode every image (once per job: see above).
        ctx: the training processes (:class:`~cartoonseg.training.distributed.DistContext`); None or one process:
            this process checks everything.

    Raises:
        ValueError: one or more files fail; the message counts them and lists the first ``show`` with the reason.
    """
    images = list(images)
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    bar = None
    if progress and sys.stderr.isatty() and images:
        from tqdm import tqdm

        bar = tqdm(total=len(images), unit="img", desc="decoding images" if full else "checking images",
                   file=sys.stderr, dynamic_ncols=True, leave=False)
    found: dict[int, str] = {}  # image index -> its problem

    def problem(i: int) -> str | None:
        return _image_problem(images[i], full and i % world == rank)  # this rank decodes its share only

    try:
        with ThreadPoolExecutor(max(1, min(threads, len(images)))) as pool:
            for i, why in enumerate(pool.map(problem, range(len(images)))):
                if why is not None:
                    found[i] = why
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if world > 1:  # every rank the same verdict: the union of what the ranks found (the lowest rank's words)
        from .distributed import all_gather_object

        for other in reversed(all_gather_object(found, ctx)):
            found.update(other)
    bad = [f"{images[i].path} {found[i]}" for i in sorted(found)]
    if bad:
        listed = "; ".join(bad[:show]) + (f"; ... and {len(bad) - show} more" if len(bad) > show else "")
        raise ValueError(f"{len(bad)} of {len(images)} training images cannot be used: {listed}. Fix or remove "
                         f"them from the annotation file (--check-images none, check_images='none', skips this check)")


def read_image_bgr(path: str | Path) -> np.ndarray:
    """uint8 ``[H,W,3]`` **BGR** (grey expanded, alpha dropped), as the original reads training images."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}: missing, not an image, or damaged inside its data (the check "
                         "before training reads headers and file ends only; --check-images full, "
                         "check_images='full', decodes every image once before training)")
    return img


def instance_masks(image: CocoImage) -> tuple[np.ndarray, np.ndarray]:
    """(masks uint8 ``[N,H,W]``, ignore_mask bool ``[N]``) of an image's annotations; box-only instances get their
    filled box (xyxy truncated to int, as CartoonSegmentation's ``LoadAnnotationsNoSegs``; the mask only feeds
    the assigner's centre prior) and ``ignore_mask=True``."""
    n = len(image.annotations)
    masks = np.zeros((n, image.height, image.width), np.uint8)
    ignore = np.zeros(n, bool)
    for i, ann in enumerate(image.annotations):
        try:
            m = rle_utils.segmentation_to_mask(ann.segmentation, image.height, image.width)
        except ValueError as exc:
            raise ValueError(f"annotation {ann.ann_id} of {image.path}: {exc}") from None
        if m is None or not m.any():
            x1, y1, x2, y2 = (int(c) for c in ann.box)  # truncated, as CartoonSegmentation's loader does
            masks[i, max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = 1
            ignore[i] = True
        else:
            masks[i] = m
    return masks, ignore


def find_annotation(data: str | Path, split: str = "train") -> Path:
    """The COCO JSON of ``split`` for a ``--data`` argument: the file itself, or inside ``DIR/annotations/`` the
    first of ``det_<split>.json`` (the synthesis output), ``<split>.json``, ``instances_<split>.json``, or the only
    JSON there."""
    data = Path(data)
    if data.is_file():
        return data
    ann_dir = data / "annotations"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"{data} is neither a COCO JSON file nor a dataset folder with annotations/")
    for name in (f"det_{split}.json", f"{split}.json", f"instances_{split}.json"):
        if (ann_dir / name).is_file():
            return ann_dir / name
    found = sorted(ann_dir.glob("*.json"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"no annotation file for split {split!r} in {ann_dir} (tried det_{split}.json, {split}.json, "
        f"instances_{split}.json; found {[p.name for p in found]})"
    )
