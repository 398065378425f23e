"""Chroma-key extraction of foreground characters from key-screen videos and frame folders.

The CartoonSegmentation paper (arXiv 2312.01943, §3.1, Fig. 2) extracts 26,844 characters from 1,064
chroma-key videos: "the keying colour can be automatically identified [from the hue distribution] and used as
an alpha channel". The algorithm itself is only in an unpublished supplement and no keying code was released,
so this module implements its own keying, following that description:

1. frames are sampled (``sample_fps`` per second of video) and near-duplicates are dropped (mean absolute
   difference of 32x32 thumbnails of the keyed result against the last kept frame);
2. the key hue is the peak of a **border-weighted hue histogram** of saturated, bright pixels (the screen
   dominates the frame border), :func:`estimate_key`;
3. a **soft key**: each pixel's chroma is projected on the key's chroma direction and divided by the local
   strength of the screen (a smooth "plate" interpolated from pure-screen pixels, which follows lighting
   gradients); chroma perpendicular to the key is penalised so other hues are never keyed; ink, white and
   grey pixels mixed with the screen get their exact coverage, :func:`soft_key`; then **despill** clamps the
   key's dominant channel to the largest of the other two on the foreground, :func:`despill`;
4. **clean-up**: connected components (grown by 2 px, so strand fragments next to a character join it)
   under ``min_component`` of the frame (screen speckle) are removed and
   enclosed pin holes under ``max_hole`` are filled (opaque, painted with the colour around them; an optional
   opening is off by default: it would erase 1-px hair strands);
5. **components to instances**: each component of at least ``min_instance`` of the frame becomes one instance
   (smaller kept pieces join their nearest instance), or the whole frame is one instance (``split=False``);
6. **rejection**: instances under ``min_area`` or over ``max_area`` of the frame, or touching more than
   ``max_border_touches`` frame borders, are rejected.

Output of :func:`extract_from_source`: RGBA PNGs (cropped to the instance, with a small transparent margin)
plus a ``meta.jsonl`` line per file ``{"file", "source", "frame", "instance", "key_rgb", "key_hue",
"area_frac", "bbox_xywh", "tag_string", "tag_string_character", "category_id"}`` (merged into the folder's
``meta.jsonl``: lines of other files are kept): the foreground index format read by
:mod:`cartoonseg.data.foregrounds`. Images are RGB(A) ``uint8``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..ops import disk
from ..outputs import OutputFolder, check_outputs_apart
from .foregrounds import imwrite, merge_meta

__all__ = [
    "KeyConfig",
    "KeyColour",
    "KeyedInstance",
    "estimate_key",
    "soft_key",
    "despill",
    "clean_alpha",
    "split_instances",
    "key_frame",
    "iter_frames",
    "extract_from_source",
    "VIDEO_EXTS",
    "IMAGE_EXTS",
]

VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".flv", ".m4v", ".wmv", ".mpg", ".mpeg", ".ts")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class KeyConfig:
    """Parameters of the keyer. Fractions are of the frame area; hues in degrees; S and V in [0, 1].

    Attributes:
        border_frac: width of the frame border band, as a fraction of min(H, W), whose pixels get
            ``border_weight`` in the hue histogram.
        border_weight: histogram weight of border pixels (interior pixels weigh 1).
        hist_s_min, hist_v_min: only pixels at least this saturated/bright vote for the key hue.
        hue_inner: half-width (deg) of the histogram peak that refines the key hue and measures its share.
        perp_weight: penalty on chroma perpendicular to the key direction; hues further than
            ``atan(1/perp_weight)`` from the key are never keyed.
        plate_sigma_frac: smoothing (fraction of min(H, W)) of the local screen-strength plate.
        clip_lo, clip_hi: alpha levels clipped to 0 / 1 (noise floor and ceiling).
        open_px: radius of an optional morphological opening (0 = off: an opening erases 1-px hair strands;
            screen speckle is removed by the ``min_component`` rule instead).
        max_hole: enclosed background holes smaller than this fraction of the frame are filled (noise pin
            holes); larger holes (between an arm and the body, inside a ring) are kept.
        min_component: connected components smaller than this fraction are discarded as noise.
        min_instance: components at least this large become separate instances (with ``split``).
        split: one instance per large component (``True``) or one instance per frame (``False``).
        min_area, max_area: an instance's alpha area must lie in this range (fractions of the frame).
        max_border_touches: reject instances touching more than this many of the 4 frame borders.
        margin: transparent margin (px) kept around the cropped instance.
    """

    border_frac: float = 0.08
    border_weight: float = 4.0
    hist_s_min: float = 0.35
    hist_v_min: float = 0.25
    hue_inner: float = 14.0
    perp_weight: float = 1.0
    plate_sigma_frac: float = 0.06
    clip_lo: float = 0.06
    clip_hi: float = 0.96
    open_px: int = 0
    max_hole: float = 0.0001
    min_component: float = 0.0005
    min_instance: float = 0.005
    split: bool = True
    min_area: float = 0.02
    max_area: float = 0.90
    max_border_touches: int = 2
    margin: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.hue_inner <= 90:
            raise ValueError(f"hue_inner must be in (0, 90] degrees, got {self.hue_inner}")
        if not 0 <= self.clip_lo < self.clip_hi <= 1:
            raise ValueError(f"need 0 <= clip_lo < clip_hi <= 1, got {self.clip_lo}, {self.clip_hi}")
        if not 0 <= self.min_area < self.max_area <= 1:
            raise ValueError(f"need 0 <= min_area < max_area <= 1, got {self.min_area}, {self.max_area}")
        if not 0 <= self.max_border_touches <= 4:
            raise ValueError(f"max_border_touches must be in 0..4, got {self.max_border_touches}")


@dataclasses.dataclass(frozen=True)
class KeyColour:
    """The detected key: ``hue`` in degrees [0, 360), ``rgb`` its median screen colour, ``share`` the fraction
    of the (weighted) histogram mass within ``hue_inner`` of the peak (low values mean "no screen here")."""

    hue: float
    rgb: tuple[int, int, int]
    share: float


@dataclasses.dataclass
class KeyedInstance:
    """One extracted instance: ``rgba`` ``uint8 [h,w,4]`` cropped, ``bbox_xywh`` of the crop in the frame,
    ``area_frac`` of the frame covered by alpha > 0.5."""

    rgba: np.ndarray
    bbox_xywh: tuple[int, int, int, int]
    area_frac: float


def _check_frame(frame: np.ndarray, min_side: int = 8) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"a frame must be RGB uint8 [H,W,3] (or RGBA), got shape {frame.shape}")
    if frame.dtype != np.uint8:
        raise TypeError(f"a frame must be uint8, got {frame.dtype}")
    if min(frame.shape[:2]) < min_side:
        raise ValueError(f"frame too small to key: {frame.shape[1]}x{frame.shape[0]} (need >= {min_side}x{min_side})")
    return np.ascontiguousarray(frame[..., :3])


def _hsv(frame: np.ndarray) -> np.ndarray:
    """float32 HSV with H in degrees [0,360), S and V in [0,1]."""
    return cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)


def _hue_dist(h: np.ndarray, h0: float) -> np.ndarray:
    d = np.abs(h - h0)
    return np.minimum(d, 360.0 - d)


def estimate_key(frame: np.ndarray, cfg: KeyConfig = KeyConfig()) -> KeyColour:
    """Find the key colour of a chroma-key frame from its border-weighted hue histogram.

    Args:
        frame: ``uint8 [H,W,3]`` RGB.
        cfg: keyer parameters (``border_frac``, ``border_weight``, ``hist_s_min``, ``hist_v_min``).

    Returns:
        :class:`KeyColour`. Raises ``ValueError`` when no pixel is saturated enough to be a key screen.
    """
    frame = _check_frame(frame)
    hsv = _hsv(frame)
    h, w = frame.shape[:2]
    b = max(1, int(round(min(h, w) * cfg.border_frac)))
    weight = np.ones((h, w), np.float32)
    weight[:b] = weight[-b:] = cfg.border_weight
    weight[:, :b] = weight[:, -b:] = cfg.border_weight
    valid = (hsv[..., 1] >= cfg.hist_s_min) & (hsv[..., 2] >= cfg.hist_v_min)
    if not valid.any():
        raise ValueError("no saturated pixels in the frame: cannot find a chroma-key colour")
    hist, _ = np.histogram(hsv[..., 0][valid], bins=180, range=(0, 360), weights=weight[valid])
    # circular smoothing over +-3 bins (+-6 degrees)
    kernel = np.array([1, 2, 3, 4, 3, 2, 1], np.float64)
    padded = np.concatenate([hist[-3:], hist, hist[:3]])
    smooth = np.convolve(padded, kernel, mode="valid")
    peak_bin = int(np.argmax(smooth))
    # refine: weighted circular mean of the hues within +-hue_inner of the peak bin centre
    centre = peak_bin * 2.0 + 1.0
    near = valid & (_hue_dist(hsv[..., 0], centre) <= cfg.hue_inner)
    angles = np.deg2rad(hsv[..., 0][near])
    wts = weight[near]
    hue = float(np.rad2deg(np.arctan2((np.sin(angles) * wts).sum(), (np.cos(angles) * wts).sum())) % 360.0)
    share = float(wts.sum() / max(weight[valid].sum(), 1e-9))
    rgb = tuple(int(v) for v in np.median(frame[near], axis=0))
    return KeyColour(hue=hue, rgb=rgb, share=share)


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """Linear 2-D chroma plane of RGB (``[..., 2]``): grey maps to the origin, mixing is preserved."""
    rgb = rgb.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack([r - 0.5 * (g + b), 0.8660254 * (g - b)], axis=-1)


def _smooth_fill(values: np.ndarray, weights: np.ndarray, sigma_px: float, fallback: float) -> np.ndarray:
    """Normalised convolution: a smooth field interpolating ``values`` where ``weights`` > 0 (computed at a
    reduced resolution, so it costs little even for a large ``sigma_px``)."""
    h, w = values.shape
    f = max(1, int(sigma_px // 4))
    sw, sh = max(1, w // f), max(1, h // f)
    v = cv2.resize(values * weights, (sw, sh), interpolation=cv2.INTER_AREA)
    m = cv2.resize(weights, (sw, sh), interpolation=cv2.INTER_AREA)
    s = max(0.5, sigma_px / f)
    v = cv2.GaussianBlur(v, (0, 0), s)
    m = cv2.GaussianBlur(m, (0, 0), s)
    field = np.where(m > 1e-4, v / np.maximum(m, 1e-4), fallback).astype(np.float32)
    # blend towards the fallback where support is thin
    conf = np.clip(m / 0.05, 0.0, 1.0)
    field = conf * field + (1 - conf) * fallback
    return cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR)


def soft_key(frame: np.ndarray, key: KeyColour, cfg: KeyConfig = KeyConfig()) -> np.ndarray:
    """Soft alpha of a chroma-key frame (a chroma-projection keyer with a local screen plate).

    Every pixel's chroma ``c`` (a linear 2-D colour-difference plane, so a mix of foreground and screen
    mixes linearly) is projected on the key's chroma direction ``k``:
    ``keyness = (c.k - perp_weight * |c x k|) / plate``, where ``plate`` is the local strength of the screen
    (interpolated from pure-screen pixels, so lighting gradients and vignetting are followed). A grey, black
    or white foreground edge mixed with the screen gets exactly its coverage; colours more than
    ``atan(1/perp_weight)`` (45 degrees) of hue away from the key are never keyed.
    ``alpha = 1 - keyness``, then levels are clipped to ``[clip_lo, clip_hi]`` to remove sensor noise.

    Returns:
        ``float32 [H,W]`` alpha in [0, 1] (1 = foreground).
    """
    frame = _check_frame(frame)
    c = _chroma(frame)
    k = _chroma(np.asarray(key.rgb, np.float32))
    k_norm = float(np.linalg.norm(k))
    if k_norm < 10.0:
        raise ValueError(f"key colour {key.rgb} is too grey to key (chroma {k_norm:.1f} < 10)")
    k_hat = k / k_norm
    par = c[..., 0] * k_hat[0] + c[..., 1] * k_hat[1]
    perp = np.abs(c[..., 0] * k_hat[1] - c[..., 1] * k_hat[0])
    score = par - cfg.perp_weight * perp
    screen = ((score > 0.55 * k_norm) & (perp < 0.25 * par)).astype(np.float32)
    sigma = cfg.plate_sigma_frac * float(min(frame.shape[:2]))
    fallback = float(np.median(par[screen > 0])) if screen.any() else k_norm
    plate = _smooth_fill(par, screen, sigma, fallback)
    keyness = np.clip(score / np.maximum(plate, 1.0), 0.0, 1.0)
    alpha = 1.0 - keyness
    alpha = np.clip((alpha - cfg.clip_lo) / (cfg.clip_hi - cfg.clip_lo), 0.0, 1.0)
    return alpha.astype(np.float32)


def despill(frame: np.ndarray, key: KeyColour, alpha: np.ndarray | None = None) -> np.ndarray:
    """Remove key-colour spill: the key's dominant channel is clamped to the max of the other two channels
    (the classic green/blue-screen despill), on pixels with ``alpha > 0`` (all pixels when ``alpha`` is None).

    Returns:
        ``uint8 [H,W,3]`` RGB.
    """
    frame = _check_frame(frame, min_side=1).copy()
    c = int(np.argmax(key.rgb))
    others = [i for i in range(3) if i != c]
    limit = np.maximum(frame[..., others[0]], frame[..., others[1]])
    target = np.minimum(frame[..., c], limit)
    if alpha is not None:
        target = np.where(alpha > 0, target, frame[..., c])
    frame[..., c] = target
    return frame


def clean_alpha(alpha: np.ndarray, cfg: KeyConfig = KeyConfig()) -> np.ndarray:
    """Morphological clean-up of a soft alpha: optional opening, removal of foreground components under
    ``min_component`` of the frame (speckle), filling of enclosed holes under ``max_hole`` (pin holes, made opaque;
    :func:`key_frame` paints them with the colour around them).
    Soft edges are kept within 2 px of the cleaned core.

    Returns:
        ``float32 [H,W]`` alpha.
    """
    core = (alpha > 0.5).astype(np.uint8)
    if cfg.open_px > 0:
        core = cv2.morphologyEx(core, cv2.MORPH_OPEN, disk(cfg.open_px))
    # size rule on components of the core grown by 2 px, so fragments of hair strands that almost touch the
    # character count as part of it; isolated speckle does not
    grown = cv2.dilate(core, disk(2))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    areas = np.bincount(labels[core > 0], minlength=n)
    keep = np.zeros(n, bool)
    keep[1:] = areas[1:] >= cfg.min_component * alpha.size
    core = (keep[labels] & (core > 0)).astype(np.uint8)
    # holes: 4-connected background components that do not touch the frame border
    n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - core, connectivity=4)
    h, w = core.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    inner = (x > 0) & (y > 0) & (x + stats[:, cv2.CC_STAT_WIDTH] < w) & (y + stats[:, cv2.CC_STAT_HEIGHT] < h)
    fill = inner & (stats[:, cv2.CC_STAT_AREA] < cfg.max_hole * alpha.size)
    fill[0] = fill[0] and inner[0]
    holes = fill[labels] & (core == 0)
    support = cv2.dilate(core, disk(2))
    out = np.where(support > 0, alpha, 0.0).astype(np.float32)
    out[holes] = 1.0  # filled: part of the character (its colour is restored by key_frame)
    return out


def split_instances(alpha: np.ndarray, cfg: KeyConfig = KeyConfig()) -> list[np.ndarray]:
    """Split a cleaned alpha into per-instance alphas (``float32 [H,W]`` each, same size as the frame).

    Components of ``alpha > 0.5`` covering at least ``min_instance`` of the frame are instances; smaller
    components join the instance with the nearest pixel. Soft edge pixels go to the nearest instance.
    With ``cfg.split = False`` the whole alpha is one instance.
    """
    core = (alpha > 0.5).astype(np.uint8)
    if not core.any():
        return []
    if not cfg.split:
        return [alpha]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= cfg.min_instance * alpha.size]
    if len(big) <= 1:
        return [alpha]
    # nearest big component for every pixel: distance transform per big component
    dists = np.stack([cv2.distanceTransform((labels != i).astype(np.uint8), cv2.DIST_L2, 3) for i in big])
    owner = np.argmin(dists, axis=0)
    return [np.where(owner == k, alpha, 0.0).astype(np.float32) for k in range(len(big))]


def _border_touches(mask: np.ndarray) -> int:
    return int(mask[0].any()) + int(mask[-1].any()) + int(mask[:, 0].any()) + int(mask[:, -1].any())


def key_frame(frame: np.ndarray, cfg: KeyConfig = KeyConfig(), key: KeyColour | None = None
              ) -> tuple[list[KeyedInstance], np.ndarray, KeyColour]:
    """Key one frame end to end.

    Args:
        frame: ``uint8 [H,W,3]`` RGB.
        cfg: keyer parameters.
        key: a known key colour; estimated from the frame when ``None``.

    Returns:
        ``(instances, alpha, key)``: the accepted instances (RGBA crops, despilled), the full-frame cleaned
        alpha ``float32 [H,W]`` and the key colour used.
    """
    frame = _check_frame(frame)
    key = key or estimate_key(frame, cfg)
    soft = soft_key(frame, key, cfg)
    alpha = clean_alpha(soft, cfg)
    rgb = despill(frame, key, alpha)
    filled = ((alpha > 0.5) & (soft <= 0.5)).astype(np.uint8)  # pin holes: key-coloured noise inside a character
    if filled.any():  # their pixels show the screen: take the colour of the character around them
        rgb = cv2.inpaint(rgb, filled, 2, cv2.INPAINT_TELEA)
    h, w = alpha.shape
    out: list[KeyedInstance] = []
    for inst_alpha in split_instances(alpha, cfg):
        core = inst_alpha > 0.5
        area = float(core.mean())
        if not cfg.min_area <= area <= cfg.max_area:
            continue
        if _border_touches(core) > cfg.max_border_touches:
            continue
        ys, xs = np.nonzero(inst_alpha > 0)
        x0 = max(0, int(xs.min()) - cfg.margin)
        y0 = max(0, int(ys.min()) - cfg.margin)
        x1 = min(w, int(xs.max()) + 1 + cfg.margin)
        y1 = min(h, int(ys.max()) + 1 + cfg.margin)
        a8 = np.clip(np.round(inst_alpha[y0:y1, x0:x1] * 255), 0, 255).astype(np.uint8)
        rgba = np.dstack([rgb[y0:y1, x0:x1], a8])
        rgba[a8 == 0, :3] = 0
        out.append(KeyedInstance(rgba=rgba, bbox_xywh=(x0, y0, x1 - x0, y1 - y0), area_frac=area))
    return out, alpha, key


def iter_frames(source: str | Path, sample_fps: float = 1.0, max_frames: int | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, RGB uint8 frame)`` from a video file (OpenCV) or a folder of images (sorted by
    name, every image is one frame).

    For videos, one frame per ``1/sample_fps`` seconds is kept (``sample_fps <= 0`` keeps every frame).
    Unreadable folder images are skipped with a warning; an unreadable video raises ``ValueError``.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        count = 0
        for i, p in enumerate(files):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                print(f"warning: skipping unreadable image {p}")
                continue
            yield i, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            count += 1
            if max_frames is not None and count >= max_frames:
                return
        return
    if not source.is_file():
        raise FileNotFoundError(f"chroma-key source not found: {source} (expected a video file or a frame folder)")
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise ValueError(f"cannot read {source} as a video (OpenCV cannot open it); expected a video file or a "
                         f"frame folder")
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        step = max(1, int(round(fps / sample_fps))) if (sample_fps > 0 and fps > 0) else 1
        index = 0
        count = 0
        while True:
            if index % step == 0:
                ok, img = cap.read()
                if not ok:
                    break
                yield index, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
                count += 1
                if max_frames is not None and count >= max_frames:
                    break
            else:
                if not cap.grab():
                    break
            index += 1
    finally:
        cap.release()


def _thumb(alpha: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    pre = rgb.astype(np.float32) / 255.0 * alpha[..., None]
    return np.dstack([cv2.resize(pre, (32, 32), interpolation=cv2.INTER_AREA),
                      cv2.resize(alpha, (32, 32), interpolation=cv2.INTER_AREA)])


def extract_from_source(source: str | Path, out_dir: str | Path | OutputFolder, cfg: KeyConfig = KeyConfig(),
                        sample_fps: float = 1.0, dedup_threshold: float = 0.02, max_frames: int | None = None,
                        min_key_share: float = 0.2, *, name: str | None = None, overwrite: bool = False
                        ) -> list[dict]:
    """Key a video or frame folder and write the accepted instances to ``out_dir``.

    Args:
        source: video file or folder of frames.
        out_dir: output folder (or an open :class:`cartoonseg.outputs.OutputFolder`, for several sources); gets
            ``<name>_f<frame>_i<k>.png`` RGBA files and merges their lines into ``meta.jsonl``. The output policy is
            :mod:`cartoonseg.outputs`': the folder must be new, empty or written by cartoonseg unless
            ``overwrite``, and must not be, lie inside or contain ``source``; files are written atomically; a rerun
            replaces its own files and their ``meta.jsonl`` lines (no duplicates), other lines are kept.
        cfg: keyer parameters.
        sample_fps: frames per second of video to examine.
        dedup_threshold: a frame whose keyed 32x32 thumbnail differs from the last kept frame's by less than
            this mean absolute difference (in [0, 1]) is a near-duplicate and skipped.
        max_frames: stop after this many sampled frames.
        min_key_share: skip frames where the detected key colour covers less than this share of the
            saturated pixels (no key screen in view).
        name: prefix of the output names (default: the video's stem or the folder's name); sources sharing one
            output folder need distinct names (``train.chroma_key`` gives them
            :func:`cartoonseg.outputs.unique_names`).
        overwrite: with a folder path, allow it to hold files cartoonseg did not write.

    Returns:
        The metadata records written (one per instance file).
    """
    source = Path(source)
    if isinstance(out_dir, OutputFolder):
        out, own = out_dir, False
    else:
        check_outputs_apart([out_dir], [source])
        out, own = OutputFolder(out_dir, inputs=[source], overwrite=overwrite), True
    records: list[dict] = []
    last: np.ndarray | None = None
    named = source if source.name not in ("", "..") else Path(os.path.abspath(source))  # "." is named, too
    stem = name if name is not None else (named.stem if named.is_file() else named.name)
    try:
        for index, frame in iter_frames(source, sample_fps=sample_fps, max_frames=max_frames):
            try:
                instances, alpha, key = key_frame(frame, cfg)
            except ValueError as err:
                print(f"warning: {source} frame {index}: {err}")
                continue
            if key.share < min_key_share or not instances:
                continue
            thumb = _thumb(alpha, frame)
            if last is not None and float(np.abs(thumb - last).mean()) < dedup_threshold:
                continue
            last = thumb
            for k, inst in enumerate(instances):
                file = f"{stem}_f{index:06d}_i{k}.png"
                out.write(file, imwrite, inst.rgba)
                records.append({
                    "file": file, "source": str(source), "frame": index, "instance": k,
                    "key_rgb": list(key.rgb), "key_hue": round(key.hue, 2), "area_frac": round(inst.area_frac, 5),
                    "bbox_xywh": list(inst.bbox_xywh), "tag_string": "", "tag_string_character": "",
                    "category_id": 0,
                })
    except BaseException:
        with contextlib.suppress(Exception):  # what was written keeps its metadata; the first error is reported
            merge_meta(out, records)
        if own:
            out.abort()  # a folder made by this call and still empty goes again
        raise
    merge_meta(out, records)
    if own:
        out.close()
    return records
