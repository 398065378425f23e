"""Benchmark of instance alpha mattes (cartoonseg.matting) on synthetic composites with known alpha.

Four scenes, each a cartoon-style composite (flat-coloured characters with outlines over a textured background) with
its exact per-instance alpha:

* ``strands``: a character with a fan of thin (1-2 px, anti-aliased) hair strands;
* ``soft_edges``: a character whose outline is a soft ramp (glow / motion blur), 0 -> 1 over ~10 px;
* ``overlap``: two characters, one partly in front of the other (ground truth = visible contributions);
* ``overlap_cel``: the same two cel-shaded, with thin anti-aliased outlines: the front one's outline runs between
  its dark shade and the back character, only ~0.06 darker than the shade.

The segmenter's soft masks are simulated as :class:`cartoonseg.Segmenter` computes them (no trained weights are
available here; :func:`simulated_soft_mask` gives the reason for each step): coverage at the refiner's working
resolution (long side <= 720, so a 1440² image is refined at half size), parts <= 2 working pixels wide lost (the
network's stride-2 grid), a smooth boundary displacement of 1 working pixel, the calibrated sigmoid ramp, bilinear
paste-back. Scored on the **boundary band** (pixels where the true alpha is fractional or within 5 px of its 0.5
contour) and on the whole image: SAD (sum of absolute differences, in thousands as in matting papers) and MSE (x1e3)
of the matte vs. the true alpha, next to the soft mask's own errors. The background is painted (smooth gradients, a
brush texture and line art of its own); ``--grain 0.03`` adds per-pixel noise on top. Target (issue 18): the matte
halves the soft mask's SAD on the boundary band. ``--v1`` runs the first version of this benchmark (no background
line art; soft mask = the alpha thresholded, opened 3x3 and blurred with sigma 1.5 image pixels at any size).

    python bench/bench_matting.py                     # 512² and 1440², four scenes, JSON lines + a summary line
    python bench/bench_matting.py --v1 --sizes 512    # the first benchmark's figures
    python bench/bench_matting.py --sizes 720 --method knn
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cartoonseg import Instances  # noqa: E402
from cartoonseg.matting import MattingConfig, instance_alphas  # noqa: E402


def _background(size: int, rng, grain: float = 0.0, line_art: bool = True) -> np.ndarray:
    """A painted cartoon background: smooth colour gradients, a brush texture (noise blurred over ~2 px, amplitude
    0.03) and dark line art of its own (a horizon, two building edges and a diagonal, 1-2 px anti-aliased lines that
    pass behind and next to the characters and their hair, so a matte that takes every dark line touching a
    character for part of it is penalised); ``grain`` adds per-pixel noise of that standard deviation on top (film
    grain / heavy JPEG noise). ``line_art=False`` is the first benchmark's background."""
    y, x = np.mgrid[0:size, 0:size] / size
    bg = np.stack([0.55 + 0.3 * np.sin(6 * x), 0.6 + 0.25 * np.cos(5 * y), 0.7 - 0.3 * x * y], -1)
    brush = cv2.GaussianBlur(rng.normal(0, 1, bg.shape).astype(np.float32), (0, 0), 2.0)
    bg += 0.03 * brush / max(float(brush.std()), 1e-6)
    if not line_art:
        return np.clip(bg + (rng.normal(0, grain, bg.shape) if grain else 0.0), 0, 1)
    s = 4  # line art drawn 4x supersampled, then area-averaged: anti-aliased
    lines = np.zeros((size * s, size * s), np.uint8)
    for (x0, y0, x1, y1), width in (((0.0, 0.64, 1.0, 0.60), 2.0), ((0.30, 0.0, 0.31, 0.62), 1.5),
                                    ((0.73, 0.0, 0.72, 0.61), 1.5), ((0.05, 0.95, 0.45, 0.62), 1.0)):
        cv2.line(lines, (int(x0 * size * s), int(y0 * size * s)), (int(x1 * size * s), int(y1 * size * s)), 255,
                 thickness=max(1, int(round(width * s))), lineType=cv2.LINE_AA)
    ink = cv2.resize(lines.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_AREA)[..., None]
    bg = bg * (1 - ink) + np.array([0.16, 0.12, 0.2]) * ink
    if grain:
        bg += rng.normal(0, grain, bg.shape)
    return np.clip(bg, 0, 1)


def _character(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased alpha of a body (ellipse) + head (circle), 4x supersampled."""
    s = 4
    y, x = (np.mgrid[0:size * s, 0:size * s] + 0.5) / s
    body = ((x - cx) / (0.7 * r)) ** 2 + ((y - cy - 0.9 * r) / (1.1 * r)) ** 2 < 1
    head = (x - cx) ** 2 + (y - cy) ** 2 < (0.6 * r) ** 2
    return cv2.resize((body | head).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


def _cel_character(size: int, cx: float, cy: float, r: float, colour) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, colours) of a cel-shaded character: the :func:`_character` shape with a thin anti-aliased outline
    (1.75 px drawn 4x supersampled, the half outside the silhouette cut off by its alpha) and a shading strip at
    65 % of the fill on its right side, the side an overlapping character to its right meets: next to the shade
    the outline is only ~0.06 darker than its surroundings."""
    s = 4
    y, x = (np.mgrid[0:size * s, 0:size * s] + 0.5) / s
    body = ((x - cx) / (0.7 * r)) ** 2 + ((y - cy - 0.9 * r) / (1.1 * r)) ** 2 < 1
    head = (x - cx) ** 2 + (y - cy) ** 2 < (0.6 * r) ** 2
    big = (body | head).astype(np.uint8)
    alpha = cv2.resize(big.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    ring = cv2.morphologyEx(big, cv2.MORPH_GRADIENT, np.ones((7, 7), np.uint8)).astype(np.float32)
    ring = cv2.resize(ring, (size, size), interpolation=cv2.INTER_AREA)[..., None]
    yy, xx = np.mgrid[0:size, 0:size]
    fg = np.empty((size, size, 3))
    fg[:] = colour
    fg[(xx - cx) > 0.25 * r + 0.2 * (yy - cy)] = np.array(colour) * 0.65
    return alpha, fg * (1 - ring) + np.array([0.1, 0.08, 0.12]) * ring


def _strands(size: int, cx: float, cy: float, r: float, rng) -> np.ndarray:
    s = 4
    canvas = np.zeros((size * s, size * s), np.uint8)
    for k in range(24):
        ang = np.pi * (1.05 + 0.9 * k / 23) + rng.normal(0, 0.03)
        x0, y0 = cx + 0.55 * r * np.cos(ang), cy + 0.55 * r * np.sin(ang)
        length = r * rng.uniform(0.35, 0.8)
        pts = []
        for t in np.linspace(0, 1, 12):
            bend = 0.15 * r * np.sin(3 * t + k) * t
            pts.append(((x0 + np.cos(ang) * length * t - np.sin(ang) * bend) * s,
                        (y0 + np.sin(ang) * length * t + np.cos(ang) * bend) * s))
        cv2.polylines(canvas, [np.int32(pts)], False, 255, thickness=int(rng.integers(4, 8)), lineType=cv2.LINE_AA)
    return cv2.resize(canvas.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_AREA)


def _paint(alpha: np.ndarray, colour, outline=(0.1, 0.08, 0.12)) -> np.ndarray:
    """Flat colour with a dark outline along the alpha edge."""
    edge = cv2.morphologyEx((alpha > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    fg = np.empty(alpha.shape + (3,))
    fg[:] = colour
    fg[edge] = outline
    return fg


def make_scene(name: str, size: int, seed: int = 0, grain: float = 0.0,
               line_art: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    """(image float RGB [H,W,3] in [0,1], per-instance visible alphas, front first)."""
    rng = np.random.default_rng(seed)
    bg = _background(size, rng, grain, line_art)
    if name == "strands":
        a = np.maximum(_character(size, 0.5 * size, 0.35 * size, 0.22 * size),
                       _strands(size, 0.5 * size, 0.35 * size, 0.22 * size, rng))
        layers = [(a, _paint(a, (0.95, 0.75, 0.3)))]
    elif name == "soft_edges":  # the whole layer defocused: premultiplied colour and alpha blurred together
        hard = _character(size, 0.5 * size, 0.35 * size, 0.24 * size)
        sigma = size / 150
        a = np.clip(cv2.GaussianBlur(hard, (0, 0), sigma), 0, 1)
        premult = cv2.GaussianBlur(_paint(hard, (0.3, 0.5, 0.95)) * hard[..., None], (0, 0), sigma)
        layers = [(a, np.where(a[..., None] > 1e-6, premult / np.maximum(a[..., None], 1e-6), 0.0))]
    elif name == "overlap":
        front = _character(size, 0.42 * size, 0.4 * size, 0.2 * size)
        back = _character(size, 0.62 * size, 0.3 * size, 0.2 * size)
        layers = [(front, _paint(front, (0.9, 0.3, 0.35))), (back, _paint(back, (0.35, 0.8, 0.4)))]
    elif name == "overlap_cel":  # the front character's thin outline runs between its cel shade and the back one
        layers = [_cel_character(size, 0.42 * size, 0.4 * size, 0.2 * size, (0.9, 0.3, 0.35)),
                  _cel_character(size, 0.62 * size, 0.3 * size, 0.2 * size, (0.35, 0.8, 0.4))]
    else:
        raise ValueError(f"unknown scene {name!r}")
    image = bg.copy()
    for a, fg in reversed(layers):  # back to front
        image = fg * a[..., None] + image * (1 - a[..., None])
    remaining = np.ones((size, size))
    visible = []
    for a, _ in layers:  # front first: what each layer contributes
        visible.append(a * remaining)
        remaining = remaining * (1 - a)
    return np.clip(image, 0, 1), visible


def simulated_soft_mask_v1(alpha: np.ndarray) -> np.ndarray:
    """The first benchmark's soft mask (kept for comparison, ``--v1``): the alpha thresholded at 0.5, opened with a
    3x3 square, blurred with a Gaussian of sigma 1.5 image pixels, at any image size."""
    binary = cv2.morphologyEx((alpha > 0.5).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return np.clip(cv2.GaussianBlur(binary.astype(np.float32), (0, 0), 1.5), 0, 1)


def _signed_distance(binary: np.ndarray) -> np.ndarray:
    """Distance in pixels to the contour of a binary mask, positive inside (pixel centres, +-0.5 at the edge)."""
    inside = cv2.distanceTransform(binary, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - binary, cv2.DIST_L2, 5)
    return np.where(binary > 0, inside - 0.5, 0.5 - outside)


def simulated_soft_mask(alpha: np.ndarray, work: int = 720, sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    """The refined soft mask :class:`cartoonseg.Segmenter` would return for an instance whose true alpha is
    ``alpha``, simulated step by step as the segmenter computes it (no trained refiner weights are available here):

    1. working resolution: the refiner sees the image scaled **down** (never up) so its long side fits ``work``
       (``refine_size`` = 720, bilinear, :func:`cartoonseg.transforms.refine_canvas`); the instance's coverage
       there is the alpha resized the same way;
    2. resolution of the network: IS-Net's first convolution has stride 2 and its finest output ``d1`` is upsampled
       x2, so parts at most 2 working pixels wide (thin strands) are not in its mask: a 3x3 opening of the
       coverage > 0.5;
    3. the network's boundary is off the artist's by a smooth random displacement ``e`` (standard deviation
       ``sigma`` working pixels, correlated over ~6 px along the contour, the scale of the decoder's features);
    4. the output is ``sigmoid(d1)``: a network trained with binary cross-entropy is (ideally) calibrated, its
       probability at signed distance ``d`` from its own contour is the chance that the true contour lies
       beyond, ``Phi((d + e) / sigma)``, written as the logistic ``sigmoid(1.7 (d + e) / sigma)``;
    5. paste-back: bilinear ``align_corners=True`` from the working size to the image, as ``Segmenter._refine``.

    So the soft mask is blurry at image resolution by the working-to-image scale factor, as the segmenter's is.
    ``sigma`` = 1 working pixel: the decoder's finest grid is 2 working pixels, so its contour is placed to about
    +-1 pixel.
    """
    h, w = alpha.shape
    scale = min(1.0, work / max(h, w))
    hw, ww = (max(1, round(h * scale)), max(1, round(w * scale))) if scale < 1 else (h, w)
    cover = cv2.resize(alpha.astype(np.float32), (ww, hw), interpolation=cv2.INTER_LINEAR) if scale < 1 else alpha
    binary = cv2.morphologyEx((cover > 0.5).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    field = cv2.GaussianBlur(np.random.default_rng(seed).normal(0, 1, binary.shape).astype(np.float32), (0, 0), 6.0)
    shift = sigma * field / max(float(field.std()), 1e-6)
    prob = torch.sigmoid(torch.from_numpy((1.7 * (_signed_distance(binary) + shift) / sigma).astype(np.float32)))
    if (hw, ww) != (h, w):
        prob = torch.nn.functional.interpolate(prob[None, None], size=(h, w), mode="bilinear", align_corners=True)[0, 0]
    return prob.numpy()


def boundary_band(alpha: np.ndarray, width: int = 5) -> np.ndarray:
    binary = (alpha > 0.5).astype(np.uint8)
    grad = cv2.morphologyEx(binary, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    near = cv2.dilate(grad, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))) > 0
    return near | ((alpha > 0.01) & (alpha < 0.99))


def score(pred: np.ndarray, truth: np.ndarray, region: np.ndarray) -> dict:
    d = (pred - truth)[region]
    return {"sad_k": round(float(np.abs(d).sum()) / 1000, 3), "mse_e3": round(float((d ** 2).mean()) * 1000, 3)}


def run(name: str, size: int, config: MattingConfig, grain: float = 0.0, v1: bool = False) -> dict:
    image, truths = make_scene(name, size, grain=grain, line_art=not v1)
    softs = [simulated_soft_mask_v1(a) if v1 else simulated_soft_mask(a, seed=k + 1) for k, a in enumerate(truths)]
    inst = Instances.from_masks(torch.from_numpy(np.stack(softs)).float())
    start = time.perf_counter()
    out = instance_alphas((image * 255 + 0.5).astype(np.uint8), inst, config)
    elapsed = time.perf_counter() - start
    mattes = out.alphas.numpy()
    truth, soft, matte = np.stack(truths), np.stack(softs), mattes
    band = np.stack([boundary_band(a) for a in truths])
    everywhere = np.ones_like(band)
    res = {"bench": "v1" if v1 else "v2", "scene": name, "size": size, "grain": grain, "instances": len(truths), "seconds": round(elapsed, 2),
           "band_soft": score(soft, truth, band), "band_matte": score(matte, truth, band),
           "all_soft": score(soft, truth, everywhere), "all_matte": score(matte, truth, everywhere),
           "max_alpha_sum": round(float(matte.sum(0).max()), 6)}
    res["band_sad_ratio"] = round(res["band_matte"]["sad_k"] / max(res["band_soft"]["sad_k"], 1e-9), 3)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1440],
                    help="image sizes (square); 512 is refined at full size, 1440 at half (refine_size 720)")
    ap.add_argument("--method", default="cf", choices=["cf", "knn", "lkm"])
    ap.add_argument("--scenes", nargs="+", default=["strands", "soft_edges", "overlap", "overlap_cel"],
                    choices=["strands", "soft_edges", "overlap", "overlap_cel"])
    ap.add_argument("--grain", type=float, default=0.0,
                    help="per-pixel background noise (std), e.g. 0.03")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--v1", action="store_true",
                    help="the first benchmark: no background line art, v1 soft masks (blurred opened threshold)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = MattingConfig(method=args.method)
    rows = []
    for size in args.sizes:
        for scene in args.scenes:
            rows.append(run(scene, size, config, args.grain, args.v1))
            print(json.dumps(rows[-1]), flush=True)
    ratio = max(r["band_sad_ratio"] for r in rows)
    print(json.dumps({"summary": "matte SAD / soft-mask SAD on the boundary band (worst scene)", "ratio": ratio,
                      "target": 0.5, "met": ratio <= 0.5, "load_avg": [round(v, 2) for v in os.getloadavg()],
                      "method": args.method, "bench": "v1" if args.v1 else "v2"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
