"""Foreground and background transforms and colour harmonisation for dataset synthesis.

Re-implements, with OpenCV and numpy only, what CartoonSegmentation (arXiv 2312.01943, §3.2 and Fig. 3f)
does with albumentations/imgaug/scikit-learn (CS ``animeinsseg/data/transforms.py`` L88-270 and
``utils/io_utils.py`` L128-211):

* background: ``SmallestMaxSize(1.2 tgt, INTER_AREA)`` then ``RandomResizedCrop(tgt, scale=(0.9, 1.5),
  ratio=(0.9, 1.1))`` with its 10-try / centre-crop fallback, :func:`background_crop`;
* foreground ``train`` chain (partition layout): ``LongestMaxSize(tgt)``, random scale x[0.15, 0.70]
  (INTER_AREA), affine (rotate +-15 deg, shear +-0.1, p 0.3), perspective (scale 0-0.06, p 0.3), horizontal
  flip (p 0.5), elastic (alpha 0.3, sigma 15, alpha_affine 15 capped on small characters, p 0.3), grid
  distortion (5 steps, limit 0.3,
  p 0.3), :func:`fg_transform_train`; the ``distort_only`` chain (row and person-box layouts) drops the
  resize, the scale and the rotation, :func:`fg_transform_distort`;
* rotation that expands the canvas so nothing is cut, then crops to the alpha box, :func:`rotate_expand`;
* histogram matching with the original's template rule, :func:`harmonise_histograms`;
* k-means colour quantisation (k in {12, 16, 32}) on the original's pixel sample, :func:`quantize_colours`.

Deliberate differences, all to keep labels exact: warps use constant (transparent) borders and expanded
canvases instead of reflection or cropping, so no partial mirrored copies of a character appear and nothing
is cut; the grid distortion's cumulative steps are renormalised to span the image; warps interpolate
**premultiplied** colour, so edges do not pick up the black of transparent pixels.

Foregrounds are ``uint8 [H,W,4]`` RGBA, backgrounds ``uint8 [H,W,3]`` RGB. Every random choice comes from
the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from ..io import MAX_PIXELS

__all__ = [
    "crop_to_alpha",
    "resize_rgba",
    "rotate_expand",
    "random_affine",
    "random_perspective",
    "hflip",
    "elastic_transform",
    "grid_distortion",
    "fg_transform_train",
    "fg_transform_distort",
    "background_crop",
    "histogram_match_lut",
    "harmonise_histograms",
    "kmeans",
    "quantize_colours",
]


# ----------------------------------------------------------------------------------------------- helpers
def crop_to_alpha(rgba: np.ndarray) -> np.ndarray:
    """Crop to the tight box of ``alpha > 0``; an empty alpha returns a 1x1 transparent image."""
    ys, xs = np.nonzero(rgba[..., 3])
    if xs.size == 0:
        return np.zeros((1, 1, 4), np.uint8)
    return np.ascontiguousarray(rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


def _premul(rgba: np.ndarray) -> np.ndarray:
    f = rgba.astype(np.float32)
    f[..., :3] *= f[..., 3:4] / 255.0
    return f


def _unpremul(f: np.ndarray) -> np.ndarray:
    a = np.clip(f[..., 3:4], 0, 255)
    rgb = np.where(a > 0.5, f[..., :3] * 255.0 / np.maximum(a, 1e-3), 0.0)
    out = np.concatenate([rgb, a], axis=-1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _warp(rgba: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a geometric warp ``fn`` (float32 [H,W,4] -> float32) in premultiplied space, crop to alpha."""
    return crop_to_alpha(_unpremul(fn(_premul(rgba))))


def resize_rgba(rgba: np.ndarray, width: int, height: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resize an RGBA image (premultiplied, so edges keep their colour); sizes are clamped to >= 1."""
    width, height = max(1, int(round(width))), max(1, int(round(height)))
    if (width, height) == (rgba.shape[1], rgba.shape[0]):
        return rgba
    f = cv2.resize(_premul(rgba), (width, height), interpolation=interpolation)
    return _unpremul(f)


def _expand_affine(rgba: np.ndarray, m: np.ndarray, interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    """Warp with a 2x3 matrix on an output canvas large enough to hold the whole image."""
    h, w = rgba.shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64)
    pts = corners @ m.T
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int)
    m = m.copy()
    m[:, 2] -= (x0, y0)
    size = (max(1, x1 - x0), max(1, y1 - y0))
    return _warp(rgba, lambda f: cv2.warpAffine(f, m, size, flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                                                borderValue=(0, 0, 0, 0)))


def rotate_expand(rgba: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate counter-clockwise by ``angle_deg`` on an expanded canvas, then crop to the alpha box."""
    if angle_deg == 0:
        return rgba
    h, w = rgba.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(angle_deg), 1.0)
    return _expand_affine(rgba, m)


def random_affine(rgba: np.ndarray, rng: np.random.Generator, rotate: float = 15.0, shear: float = 0.1,
                  p: float = 0.3) -> np.ndarray:
    """With probability ``p``: rotation ``U(-rotate, rotate)`` degrees and shear factor ``U(-shear, shear)``
    about the centre, on an expanded canvas (nothing is cut)."""
    if rng.random() >= p:
        return rgba
    angle = math.radians(float(rng.uniform(-rotate, rotate))) if rotate > 0 else 0.0
    sh = float(rng.uniform(-shear, shear))
    h, w = rgba.shape[:2]
    c, s = math.cos(angle), math.sin(angle)
    lin = np.array([[c, -s], [s, c]]) @ np.array([[1.0, sh], [0.0, 1.0]])
    centre = np.array([w / 2, h / 2])
    m = np.concatenate([lin, (centre - lin @ centre)[:, None]], axis=1)
    return _expand_affine(rgba, m)


def random_perspective(rgba: np.ndarray, rng: np.random.Generator, scale=(0.0, 0.06), p: float = 0.3) -> np.ndarray:
    """With probability ``p``: each corner moves by ``N(0, sigma)`` x (w, h), ``sigma ~ U(scale)`` (imgaug
    ``PerspectiveTransform``); the output canvas holds the whole warped image."""
    if rng.random() >= p:
        return rgba
    h, w = rgba.shape[:2]
    sigma = float(rng.uniform(*scale))
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = src + (rng.normal(0, sigma, (4, 2)) * (w, h)).astype(np.float32)
    dst -= dst.min(0)
    size = (max(1, int(math.ceil(dst[:, 0].max()))), max(1, int(math.ceil(dst[:, 1].max()))))
    m = cv2.getPerspectiveTransform(src, dst)
    return _warp(rgba, lambda f: cv2.warpPerspective(f, m, size, flags=cv2.INTER_LINEAR,
                                                     borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0)))


def hflip(rgba: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Horizontal flip with probability ``p``."""
    return np.ascontiguousarray(rgba[:, ::-1]) if rng.random() < p else rgba


def elastic_transform(rgba: np.ndarray, rng: np.random.Generator, alpha: float = 0.3, sigma: float = 15.0,
                      alpha_affine: float = 15.0, p: float = 0.3) -> np.ndarray:
    """With probability ``p``: albumentations-style elastic transform: a random affine that moves three
    points at +-min(h, w)/3 around the centre by ``U(-j, j)`` px, then a smooth displacement field
    ``alpha * GaussianBlur(U(-1, 1), sigma)``. The affine is applied on an expanded canvas and the field on a
    padded one, so nothing is cut.

    Deviation: ``j = min(alpha_affine, 0.1 * min(h, w) / 3)``. albumentations uses ``alpha_affine`` pixels
    whatever the size, which squashes a 100-px character to a sliver; for characters of 450 px and more the
    two agree."""
    if rng.random() >= p:
        return rgba
    h, w = rgba.shape[:2]
    cx, cy = w / 2, h / 2
    sq = min(h, w) // 3
    pts1 = np.float32([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]])
    jitter = min(alpha_affine, 0.1 * sq)
    pts2 = pts1 + rng.uniform(-jitter, jitter, pts1.shape).astype(np.float32)
    if sq > 0:
        rgba = _expand_affine(rgba, cv2.getAffineTransform(pts1, pts2))
    pad = int(math.ceil(3 * alpha)) + 2
    rgba = cv2.copyMakeBorder(rgba, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0))
    h, w = rgba.shape[:2]
    dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xx + dx, yy + dy
    return _warp(rgba, lambda f: cv2.remap(f, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                           borderValue=(0, 0, 0, 0)))


def _grid_axis(n: int, rng: np.random.Generator, num_steps: int, limit: float) -> np.ndarray:
    steps = 1.0 + rng.uniform(-limit, limit, num_steps + 1)
    step = max(1, n // num_steps)
    coords = np.zeros(n, np.float32)
    prev = 0.0
    for idx, start in enumerate(range(0, n, step)):
        end = min(start + step, n)
        cur = prev + step * float(steps[min(idx, num_steps)])
        coords[start:end] = np.linspace(prev, cur, end - start, endpoint=False)
        prev = cur
    # renormalise so the source coordinates span the whole axis (nothing of the character is cut)
    return coords * ((n - 1) / max(float(coords[-1]), 1e-6))


def grid_distortion(rgba: np.ndarray, rng: np.random.Generator, num_steps: int = 5, distort_limit: float = 0.3,
                    p: float = 0.3) -> np.ndarray:
    """With probability ``p``: albumentations-style grid distortion (each of ``num_steps`` cells per axis is
    stretched by ``1 + U(-distort_limit, distort_limit)``)."""
    if rng.random() >= p:
        return rgba
    h, w = rgba.shape[:2]
    if min(h, w) < num_steps * 2:
        return rgba
    xs = _grid_axis(w, rng, num_steps, distort_limit)
    ys = _grid_axis(h, rng, num_steps, distort_limit)
    map_x = np.broadcast_to(xs[None, :], (h, w)).astype(np.float32)
    map_y = np.broadcast_to(ys[:, None], (h, w)).astype(np.float32)
    return _warp(rgba, lambda f: cv2.remap(f, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                           borderValue=(0, 0, 0, 0)))


def fg_transform_distort(rgba: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ``distort_only`` chain: shear-only affine, perspective, flip, elastic, grid distortion."""
    rgba = random_affine(rgba, rng, rotate=0.0, shear=0.1, p=0.3)
    rgba = random_perspective(rgba, rng, p=0.3)
    rgba = hflip(rgba, rng, p=0.5)
    rgba = elastic_transform(rgba, rng, p=0.3)
    rgba = grid_distortion(rgba, rng, p=0.3)
    return rgba


def fg_transform_train(rgba: np.ndarray, rng: np.random.Generator, tgt: int,
                       scale_range=(0.15, 0.70)) -> np.ndarray:
    """The ``train`` chain: ``LongestMaxSize(tgt)``, random scale x``U(scale_range)`` (INTER_AREA), then the
    affine (with rotation +-15 deg), perspective, flip, elastic and grid distortion."""
    h, w = rgba.shape[:2]
    if max(h, w) > tgt:
        s = tgt / max(h, w)
        rgba = resize_rgba(rgba, w * s, h * s, cv2.INTER_AREA)
        h, w = rgba.shape[:2]
    s = float(rng.uniform(*scale_range))
    rgba = resize_rgba(rgba, w * s, h * s, cv2.INTER_AREA)
    rgba = random_affine(rgba, rng, rotate=15.0, shear=0.1, p=0.3)
    rgba = random_perspective(rgba, rng, p=0.3)
    rgba = hflip(rgba, rng, p=0.5)
    rgba = elastic_transform(rgba, rng, p=0.3)
    rgba = grid_distortion(rgba, rng, p=0.3)
    return rgba


# --------------------------------------------------------------------------------------------- background
def background_crop(bg: np.ndarray, rng: np.random.Generator, tgt: int, scale=(0.9, 1.5),
                    ratio=(0.9, 1.1)) -> np.ndarray:
    """``SmallestMaxSize(1.2 tgt, INTER_AREA)`` then ``RandomResizedCrop(tgt, tgt, scale, ratio)``.

    The crop tries 10 times for an area ``U(scale)`` x image area with aspect ``exp(U(log ratio))`` that
    fits; otherwise it takes the centre crop with the aspect clamped to ``ratio`` (albumentations/torchvision
    behaviour). Returns ``uint8 [tgt, tgt, 3]``.

    Raises:
        ValueError: ``bg`` is not RGB, or is so long and thin that its upscaled copy would be over
            :data:`cartoonseg.io.MAX_PIXELS` (e.g. a 1x10000 strip for ``tgt=512``: gigabytes).
    """
    if bg.ndim != 3 or bg.shape[2] != 3:
        raise ValueError(f"background must be RGB [H,W,3], got shape {bg.shape}")
    h, w = bg.shape[:2]
    s = 1.2 * tgt / min(h, w)
    if abs(s - 1.0) > 1e-6:
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        if nw * nh > MAX_PIXELS:
            raise ValueError(f"background of {w}x{h} px would be resized to {nw}x{nh} px (short side 1.2 x {tgt}), "
                             f"over the {MAX_PIXELS}-pixel limit; use a less elongated background")
        bg = cv2.resize(bg, (nw, nh), interpolation=cv2.INTER_AREA)
    h, w = bg.shape[:2]
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(rng.uniform(*scale))
        ar = math.exp(float(rng.uniform(*log_r)))
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            break
    else:
        in_ratio = w / h
        if in_ratio < ratio[0]:
            cw, ch = w, int(round(w / ratio[0]))
        elif in_ratio > ratio[1]:
            ch, cw = h, int(round(h * ratio[1]))
        else:
            cw, ch = w, h
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = bg[y0 : y0 + ch, x0 : x0 + cw]
    interp = cv2.INTER_AREA if cw > tgt else cv2.INTER_LINEAR
    return cv2.resize(crop, (tgt, tgt), interpolation=interp)


# ------------------------------------------------------------------------------------- histogram matching
def _cdf(values: np.ndarray) -> np.ndarray:
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    return np.cumsum(hist) / max(hist.sum(), 1.0), hist


def histogram_match_lut(src: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Per-value lookup table (``uint8 [256]``) mapping the quantiles of ``src`` values onto those of
    ``template`` values (both 1-D uint8 arrays), as scikit-image's ``match_histograms``."""
    s_cdf, _ = _cdf(src)
    t_cdf, t_hist = _cdf(template)
    levels = np.flatnonzero(t_hist)
    if levels.size == 0:
        return np.arange(256, dtype=np.uint8)
    lut = np.interp(s_cdf, t_cdf[levels], levels.astype(np.float64))
    return np.clip(np.round(lut), 0, 255).astype(np.uint8)


def _match_image(img: np.ndarray, mask: np.ndarray | None, template: np.ndarray, t_mask: np.ndarray | None
                 ) -> np.ndarray:
    out = img.copy()
    for c in range(3):
        src = img[..., c][mask] if mask is not None else img[..., c].ravel()
        tmpl = template[..., c][t_mask] if t_mask is not None else template[..., c].ravel()
        if src.size == 0 or tmpl.size == 0:
            continue
        lut = histogram_match_lut(src, tmpl)
        out[..., c] = lut[img[..., c]]
    return out


def harmonise_histograms(bg: np.ndarray, fgs: list[np.ndarray], min_levels: int = 128
                         ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Histogram matching with the original's template rule.

    The template is the background (all pixels) or the first foreground (pixels with alpha != 0), whichever
    has more unique values in channel 0. If the background wins, every foreground is matched to it;
    otherwise the background and the other foregrounds are matched to ``fgs[0]``. Nothing happens unless
    the template has more than ``min_levels`` unique levels.

    Args:
        bg: ``uint8 [H,W,3]`` RGB.
        fgs: ``uint8 [h,w,4]`` RGBA foregrounds (the alpha is kept).

    Returns:
        ``(bg, fgs)`` (new arrays where changed).
    """
    if not fgs:
        return bg, fgs
    fg0 = fgs[0]
    fg0_mask = fg0[..., 3] != 0
    bg_levels = np.unique(bg[..., 0]).size
    fg_levels = np.unique(fg0[..., 0][fg0_mask]).size
    if bg_levels >= fg_levels:
        if bg_levels <= min_levels:
            return bg, fgs
        out = []
        for fg in fgs:
            m = fg[..., 3] != 0
            rgb = _match_image(fg[..., :3], m, bg, None)
            out.append(np.dstack([rgb, fg[..., 3]]))
        return bg, out
    if fg_levels <= min_levels:
        return bg, fgs
    new_bg = _match_image(bg, None, fg0[..., :3], fg0_mask)
    out = [fg0]
    for fg in fgs[1:]:
        m = fg[..., 3] != 0
        out.append(np.dstack([_match_image(fg[..., :3], m, fg0[..., :3], fg0_mask), fg[..., 3]]))
    return new_bg, out


# ------------------------------------------------------------------------------------ colour quantisation
def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, n_init: int = 10, max_iter: int = 100,
           tol: float = 1e-4) -> np.ndarray:
    """k-means (k-means++ seeding, Lloyd iterations, best of ``n_init``) on ``float [N,D]`` points.

    Returns:
        ``float64 [k', D]`` centres, ``k' = min(k, number of distinct points)``.
    """
    x = np.asarray(points, np.float64)
    k = min(k, len(np.unique(x, axis=0)))
    if k <= 0:
        raise ValueError("k-means needs at least one point")
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centres = [x[int(rng.integers(len(x)))]]
        d2 = ((x - centres[0]) ** 2).sum(1)
        for _ in range(1, k):
            total = d2.sum()
            idx = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
            centres.append(x[idx])
            d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(1))
        c = np.stack(centres)
        for _ in range(max_iter):
            assign = np.argmin(_sq_dist(x, c), axis=1)
            new = np.stack([x[assign == j].mean(0) if np.any(assign == j) else c[j] for j in range(k)])
            shift = float(((new - c) ** 2).sum())
            c = new
            if shift <= tol:
                break
        inertia = float(np.min(_sq_dist(x, c), axis=1).clip(min=0).sum())
        if inertia < best_inertia:
            best, best_inertia = c, inertia
    return best


def quantize_colours(img: np.ndarray, idmap: np.ndarray, rng: np.random.Generator, ks=(12, 16, 32),
                     sample: int = 2048, n_init: int = 10) -> np.ndarray:
    """k-means colour quantisation of a composite (the original's sampling rule).

    ``k`` is drawn from ``ks``. Training pixels: all foreground pixels (``idmap != 0``) plus every second
    background pixel, the background part capped at 1.5x the foreground count, subsampled to ``sample``;
    if that pool has no more than ``sample`` pixels, ``sample`` random pixels of the whole image are used.
    Every pixel is then replaced by its nearest centre.

    Args:
        img: ``uint8 [H,W,3]`` RGB composite.
        idmap: ``[H,W]`` instance-id map (0 = background).

    Returns:
        ``uint8 [H,W,3]``.
    """
    k = int(rng.choice(np.asarray(ks)))
    flat = img.reshape(-1, 3).astype(np.float64)
    fg_idx = np.flatnonzero(idmap.ravel() != 0)
    bg_idx = np.flatnonzero(idmap.ravel() == 0)[::2]
    bg_idx = bg_idx[: int(1.5 * len(fg_idx))]
    pool = np.concatenate([fg_idx, bg_idx])
    if len(pool) > sample:
        pool = rng.choice(pool, size=sample, replace=False)
    else:
        pool = rng.choice(len(flat), size=min(sample, len(flat)), replace=False)
    centres = kmeans(flat[pool], k, rng, n_init=n_init)
    out = np.empty(len(flat), np.int64)
    c32 = centres.astype(np.float32)
    f32 = flat.astype(np.float32)
    step = 1 << 16
    for s in range(0, len(flat), step):
        out[s : s + step] = np.argmin(_sq_dist(f32[s : s + step], c32), axis=1)
    q = np.clip(np.round(centres[out]), 0, 255).astype(np.uint8)
    return q.reshape(img.shape)
