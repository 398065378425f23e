"""Procedural cartoon-like fixtures: characters with alpha, scenic backgrounds and chroma-key frames.

They stand in for the real sources of the CartoonSegmentation dataset (arXiv 2312.01943, §3.1: characters
keyed from chroma-key videos and transparent Danbooru illustrations, Danbooru ``scenery`` backgrounds), so
the whole synthesis pipeline runs, and is tested, without downloaded data. Every drawing is deterministic
given a ``numpy.random.Generator``.

A character is drawn at 3x resolution and area-downsampled, so its alpha has soft anti-aliased edges like a
keyed or hand-drawn matte. It has what makes cartoon masks hard: dark ink outlines, flat fills, thin
hair-like strands that stick out of the silhouette, and a hole (a ring held by the character, or the gap
between an arm and the body) through which the background shows.

Images are ``uint8`` in **RGB / RGBA** channel order.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from ..outputs import OutputFolder, check_folder
from .foregrounds import imwrite, merge_meta

__all__ = [
    "draw_character",
    "draw_background",
    "make_chroma_frame",
    "make_fixtures",
    "MAX_BACKGROUND_SIZE",
    "MAX_CHARACTER_HEIGHT",
    "MIN_BACKGROUND_SIZE",
    "MIN_CHARACTER_HEIGHT",
    "KEY_COLOURS",
]

#: smallest character height :func:`draw_character` draws, smallest background side :func:`draw_background` draws
MIN_CHARACTER_HEIGHT = 24
MIN_BACKGROUND_SIZE = 16
#: largest character height and background side :func:`make_fixtures` accepts (drawing takes about 1.8 GB and
#: 1.2 GB of memory at these sizes, four times more per doubling)
MAX_CHARACTER_HEIGHT = 2048
MAX_BACKGROUND_SIZE = 4096

_SS = 3  # supersampling factor for anti-aliased alpha

#: Typical chroma-key screen colours (RGB).
KEY_COLOURS: dict[str, tuple[int, int, int]] = {"green": (0, 177, 64), "blue": (0, 71, 187)}

_TAGS_GENERAL = [
    "1girl", "1boy", "long_hair", "short_hair", "smile", "open_mouth", "skirt", "shirt", "holding",
    "standing", "full_body", "twintails", "ribbon", "jacket", "boots", "hat", "ponytail", "gloves",
]


def _hsv_colour(rng: np.random.Generator, avoid_hue: float | None, sat=(0.35, 0.9), val=(0.45, 1.0)) -> tuple:
    """A flat fill colour (RGB ints) whose hue stays >= 45 degrees away from ``avoid_hue`` (degrees)."""
    for _ in range(100):
        hue = float(rng.uniform(0, 360))
        if avoid_hue is None or min(abs(hue - avoid_hue), 360 - abs(hue - avoid_hue)) >= 45:
            break
    s = float(rng.uniform(*sat))
    v = float(rng.uniform(*val))
    hsv = np.array([[[hue, s, v]]], np.float32)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(int(round(c * 255)) for c in rgb)


def _bezier(p0, p1, p2, n=24) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)
    return pts


def draw_character(rng: np.random.Generator, height: int = 320, avoid_hue: float | None = None) -> np.ndarray:
    """Draw one cartoon-like character.

    Args:
        rng: source of randomness (the drawing is a pure function of its state).
        height: output height in pixels (>= 24); the width follows the pose (about 0.45-0.9 x height).
        avoid_hue: keep fill colours at least 45 degrees of hue away from this one (degrees, e.g. 120 for a
            green screen), so the character can be keyed; ``None`` allows every hue.

    Returns:
        ``uint8 [H, W, 4]`` RGBA with soft alpha, transparent outside the character.
    """
    if height < MIN_CHARACTER_HEIGHT:
        raise ValueError(f"character height must be >= 24 px, got {height}")
    H = height * _SS
    W = int(height * float(rng.uniform(0.55, 0.9))) * _SS
    colour = np.zeros((H, W, 3), np.uint8)
    alpha = np.zeros((H, W), np.uint8)
    ink = tuple(int(c) for c in rng.integers(0, 50, 3))
    lw = max(1, int(round(H * 0.008)))
    cx = W / 2

    def fill_poly(pts, col, outline=True):
        pts = np.round(np.asarray(pts)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(colour, [pts], col, cv2.LINE_8)
        cv2.fillPoly(alpha, [pts], 255, cv2.LINE_8)
        if outline:
            cv2.polylines(colour, [pts], True, ink, lw, cv2.LINE_8)
            cv2.polylines(alpha, [pts], True, 255, lw, cv2.LINE_8)

    def ellipse(center, axes, angle, col, outline=True):
        c = tuple(int(round(v)) for v in center)
        a = tuple(max(1, int(round(v))) for v in axes)
        cv2.ellipse(colour, c, a, angle, 0, 360, col, -1)
        cv2.ellipse(alpha, c, a, angle, 0, 360, 255, -1)
        if outline:
            cv2.ellipse(colour, c, a, angle, 0, 360, ink, lw)
            cv2.ellipse(alpha, c, a, angle, 0, 360, 255, lw)

    def stroke(pts, col, thick):
        pts = np.round(np.asarray(pts)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(colour, [pts], False, col, thick, cv2.LINE_8)
        cv2.polylines(alpha, [pts], False, 255, thick, cv2.LINE_8)

    skin = _hsv_colour(rng, avoid_hue, sat=(0.15, 0.35), val=(0.85, 1.0))
    cloth = _hsv_colour(rng, avoid_hue)
    cloth2 = _hsv_colour(rng, avoid_hue)
    hair = _hsv_colour(rng, avoid_hue, sat=(0.3, 0.8), val=(0.3, 0.95))
    head_r = H * float(rng.uniform(0.09, 0.13))
    head_y = H * 0.05 + head_r * 1.3
    shoulder_y = head_y + head_r * 1.05
    hip_y = H * float(rng.uniform(0.55, 0.62))
    body_w = W * float(rng.uniform(0.22, 0.32))
    # legs
    for side in (-1, 1):
        x0 = cx + side * body_w * 0.25
        x1 = cx + side * body_w * float(rng.uniform(0.2, 0.7))
        leg = [(x0 - body_w * 0.14, hip_y), (x0 + body_w * 0.14, hip_y),
               (x1 + body_w * 0.12, H * 0.97), (x1 - body_w * 0.12, H * 0.97)]
        fill_poly(leg, cloth2)
    # skirt / torso
    torso = [(cx - body_w * 0.5, shoulder_y), (cx + body_w * 0.5, shoulder_y),
             (cx + body_w * float(rng.uniform(0.5, 0.9)), hip_y + H * 0.05),
             (cx - body_w * float(rng.uniform(0.5, 0.9)), hip_y + H * 0.05)]
    fill_poly(torso, cloth)
    # arms: one hangs, one bends out and back to the hip (leaves a hole between arm and body)
    arm_t = max(2, int(H * 0.035))
    stroke(_bezier((cx - body_w * 0.45, shoulder_y + arm_t), (cx - body_w * 0.8, hip_y - H * 0.1),
                   (cx - body_w * 0.7, hip_y + H * 0.02)), skin, arm_t)
    elbow_x = min(W - arm_t * 2, cx + body_w * float(rng.uniform(1.0, 1.5)))
    stroke([(cx + body_w * 0.45, shoulder_y + arm_t), (elbow_x, (shoulder_y + hip_y) / 2),
            (cx + body_w * 0.45, hip_y - H * 0.03)], skin, arm_t)
    # a held ring (a second hole)
    if rng.random() < 0.7:
        ring_c = (cx - body_w * 0.72, hip_y + H * 0.07)
        ring_r = H * float(rng.uniform(0.04, 0.07))
        col = _hsv_colour(rng, avoid_hue)
        cv2.circle(colour, tuple(int(v) for v in ring_c), int(ring_r), col, max(2, int(ring_r * 0.35)))
        cv2.circle(alpha, tuple(int(v) for v in ring_c), int(ring_r), 255, max(2, int(ring_r * 0.35)))
    # head and hair
    ellipse((cx, head_y), (head_r * 0.9, head_r), 0, skin)
    eye_y = head_y + head_r * 0.1
    for side in (-1, 1):
        ellipse((cx + side * head_r * 0.38, eye_y), (head_r * 0.12, head_r * 0.2), 0, ink, outline=False)
    ellipse((cx, head_y - head_r * 0.45), (head_r * 1.05, head_r * 0.6), 0, hair)
    # thin strands sticking out of the silhouette
    n_strands = int(rng.integers(4, 10))
    for _ in range(n_strands):
        ang = float(rng.uniform(-math.pi * 0.95, -math.pi * 0.05))
        r0 = head_r * 0.9
        p0 = (cx + r0 * math.cos(ang), head_y - head_r * 0.2 + r0 * math.sin(ang))
        length = head_r * float(rng.uniform(0.6, 2.5))
        bend = float(rng.uniform(-0.6, 0.6))
        p2 = (p0[0] + length * math.cos(ang + bend), p0[1] + length * math.sin(ang + bend) + length * 0.3)
        p1 = ((p0[0] + p2[0]) / 2 + bend * head_r, (p0[1] + p2[1]) / 2)
        stroke(_bezier(p0, p1, p2), hair if rng.random() < 0.5 else ink, max(1, int(H * 0.004)))
    # long hair falling behind the shoulders
    if rng.random() < 0.6:
        for side in (-1, 1):
            stroke(_bezier((cx + side * head_r * 0.9, head_y), (cx + side * head_r * 1.4, shoulder_y + H * 0.1),
                           (cx + side * head_r * 1.1, hip_y - H * 0.05)), hair, max(2, int(H * 0.02)))
    # shading stripe on the clothes (a second flat tone, still opaque)
    shade = tuple(int(c * 0.8) for c in cloth)
    band = np.zeros_like(alpha)
    cv2.fillPoly(band, [np.round(np.asarray(torso)).astype(np.int32)], 255)
    band[:, : int(cx)] = 0
    colour[band > 0] = shade
    cv2.polylines(colour, [np.round(np.asarray(torso)).astype(np.int32)], True, ink, lw)

    rgba = np.dstack([colour, alpha])
    small = cv2.resize(rgba, (W // _SS, H // _SS), interpolation=cv2.INTER_AREA)
    # un-premultiplied colour is what the area filter produced on opaque pixels; on edge pixels the colour
    # was averaged with black, so divide it back out to keep colours flat up to the edge.
    a = small[..., 3:4].astype(np.float32) / 255.0
    premul = cv2.resize((rgba[..., :3].astype(np.float32) * (rgba[..., 3:4] / 255.0)), (W // _SS, H // _SS),
                        interpolation=cv2.INTER_AREA)
    col = np.where(a > 0, premul / np.maximum(a, 1e-6), 0)
    small[..., :3] = np.clip(np.round(col), 0, 255).astype(np.uint8)
    return small


def draw_background(rng: np.random.Generator, width: int = 960, height: int = 720) -> np.ndarray:
    """Draw a scenic background: sky gradient, clouds, hills, buildings, textured ground.

    Returns:
        ``uint8 [height, width, 3]`` RGB with a rich histogram (well over 128 levels per channel, like a real
        CG background, so histogram matching picks it as the template).
    """
    if width < MIN_BACKGROUND_SIZE or height < MIN_BACKGROUND_SIZE:
        raise ValueError(f"background must be at least 16x16, got {width}x{height}")
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    top = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    bottom = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    img = (top * (1 - y) + bottom * y) * np.ones((1, width, 1), np.float32)
    img = (img * 255).astype(np.float32)
    horizon = int(height * float(rng.uniform(0.45, 0.7)))
    for _ in range(int(rng.integers(2, 6))):  # clouds
        c = (int(rng.integers(0, width)), int(rng.integers(0, max(1, horizon // 2))))
        cv2.ellipse(img, c, (int(rng.integers(20, max(21, width // 5))), int(rng.integers(8, max(9, height // 12)))),
                    0, 0, 360, (250, 250, 252), -1)
    for _ in range(int(rng.integers(2, 5))):  # hills
        pts = [(0, height)]
        xs = np.linspace(0, width, 8)
        base = horizon + float(rng.uniform(-0.1, 0.1)) * height
        pts += [(float(x), base + float(rng.uniform(-0.12, 0.05)) * height) for x in xs]
        pts += [(width, height)]
        col = tuple(float(c) for c in rng.uniform(40, 200, 3))
        cv2.fillPoly(img, [np.round(np.asarray(pts)).astype(np.int32)], col)
    for _ in range(int(rng.integers(3, 9))):  # buildings / trees
        x0 = int(rng.integers(0, width))
        bw = int(rng.integers(max(2, width // 30), max(3, width // 7)))
        bh = int(rng.integers(height // 10, max(height // 10 + 1, height // 2)))
        col = tuple(float(c) for c in rng.uniform(30, 230, 3))
        cv2.rectangle(img, (x0, horizon - bh), (x0 + bw, horizon + 5), col, -1)
        cv2.rectangle(img, (x0, horizon - bh), (x0 + bw, horizon + 5), (20, 20, 30), 1)
    ground = img[horizon:]
    ground *= np.float32(rng.uniform(0.6, 0.9))
    noise = rng.normal(0, 6, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img + noise, (0, 0), 0.8)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_chroma_frame(
    rng: np.random.Generator,
    width: int = 480,
    height: int = 360,
    key: str | tuple[int, int, int] = "green",
    num_characters: int = 1,
    noise: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A chroma-key frame with known alpha: characters composited over an uneven key-coloured screen.

    The screen has a lighting gradient, sensor noise and a slight vignette, and the characters avoid the key
    hue (as real keyed footage does).

    Returns:
        ``(frame uint8 [H,W,3] RGB, alpha float32 [H,W] in [0,1])`` where alpha is the union of the characters.
    """
    key_rgb = np.array(KEY_COLOURS[key] if isinstance(key, str) else key, np.float32)
    key_hue = float(cv2.cvtColor(key_rgb.reshape(1, 1, 3) / 255.0, cv2.COLOR_RGB2HSV)[0, 0, 0])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gx, gy = rng.uniform(-0.15, 0.15, 2)
    light = 1.0 + gx * (xx / width - 0.5) + gy * (yy / height - 0.5)
    light -= 0.12 * (((xx / width - 0.5) ** 2 + (yy / height - 0.5) ** 2))
    frame = key_rgb[None, None, :] * light[..., None]
    alpha_total = np.zeros((height, width), np.float32)
    for i in range(num_characters):
        ch_h = int(height * float(rng.uniform(0.55, 0.85)) / max(1, num_characters) ** 0.3)
        ch = draw_character(rng, ch_h, avoid_hue=key_hue)
        h, w = ch.shape[:2]
        if w >= width or h >= height:
            s = 0.9 * min(width / w, height / h)
            ch = cv2.resize(ch, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
            h, w = ch.shape[:2]
        slot = width / num_characters
        x0 = int(np.clip(slot * i + (slot - w) / 2 + rng.uniform(-0.1, 0.1) * slot, 1, width - w - 1))
        y0 = int(rng.integers(max(1, (height - h) // 4), max(2, height - h - 1)))
        a = ch[..., 3].astype(np.float32) / 255.0
        region = frame[y0 : y0 + h, x0 : x0 + w]
        region[:] = a[..., None] * ch[..., :3].astype(np.float32) + (1 - a[..., None]) * region
        alpha_total[y0 : y0 + h, x0 : x0 + w] = np.maximum(alpha_total[y0 : y0 + h, x0 : x0 + w], a)
    frame += rng.normal(0, noise, frame.shape).astype(np.float32)
    return np.clip(np.round(frame), 0, 255).astype(np.uint8), alpha_total


def make_fixtures(out_dir: str | Path, num_fg: int, num_bg: int, seed: int = 0,
                  fg_height: tuple[int, int] = (220, 480), bg_size: tuple[int, int] = (960, 720), *,
                  overwrite: bool = False) -> dict:
    """Write a small raw-data set: ``fg/fg_NNNNN.png`` (RGBA), ``fg/meta.jsonl`` (tags) and ``bg/bg_NNNNN.jpg``.

    The folder layout is the one the synthesiser reads (see :mod:`cartoonseg.data.foregrounds`). Output policy
    (:mod:`cartoonseg.outputs`): ``fg/`` and ``bg/`` must be new, empty or written by cartoonseg (a rerun replaces
    its own files; ``train.chroma_key`` / ``train.filter_danbooru`` outputs there are kept) unless ``overwrite``;
    files are written atomically and ``meta.jsonl`` is merged (the lines of other files are kept).

    Returns:
        ``{"fg": [paths], "bg": [paths]}``.
    """
    if num_fg < 0 or num_bg < 0:
        raise ValueError(f"num_fg and num_bg must be >= 0, got {num_fg}, {num_bg}")
    if len(fg_height) != 2 or not MIN_CHARACTER_HEIGHT <= fg_height[0] <= fg_height[1] <= MAX_CHARACTER_HEIGHT:
        raise ValueError(f"fg_height must be (low, high) with {MIN_CHARACTER_HEIGHT} <= low <= high <= "
                         f"{MAX_CHARACTER_HEIGHT}, got {tuple(fg_height)}")
    if len(bg_size) != 2 or not all(MIN_BACKGROUND_SIZE <= v <= MAX_BACKGROUND_SIZE for v in bg_size):
        raise ValueError(f"bg_size (width, height) must each be in [{MIN_BACKGROUND_SIZE}, {MAX_BACKGROUND_SIZE}], "
                         f"got {tuple(bg_size)}")
    out = Path(out_dir)  # sizes checked first: nothing is created for a request that cannot be drawn
    dirs = (out / "fg", out / "bg")
    for d in dirs:  # both checked before either is created
        check_folder(d, overwrite=overwrite, result=False)
    fg, bg = (OutputFolder(d, overwrite=overwrite) for d in dirs)
    fg_paths, bg_paths = [], []
    meta = []
    for i in range(num_fg):
        rng = np.random.default_rng([seed, 1, i])
        ch = draw_character(rng, int(rng.integers(fg_height[0], fg_height[1] + 1)))
        pad = int(rng.integers(0, 40))  # transparent margins, as real RGBA files have (auto-crop removes them)
        ch = cv2.copyMakeBorder(ch, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0))
        path = fg.write(f"fg_{i:05d}.png", imwrite, ch)
        tags = ["solo", "transparent_background"] + sorted(
            rng.choice(_TAGS_GENERAL, size=3, replace=False).tolist())
        meta.append({"file": path.name, "tag_string": " ".join(tags),
                     "tag_string_character": f"fixture_character_{i % 7}", "source": "fixture"})
        fg_paths.append(path)
    merge_meta(fg, meta)
    fg.close()
    for i in range(num_bg):
        rng = np.random.default_rng([seed, 2, i])
        bg_paths.append(bg.write(f"bg_{i:05d}.jpg", imwrite, draw_background(rng, *bg_size),
                                 [cv2.IMWRITE_JPEG_QUALITY, 95]))
    bg.close()
    return {"fg": fg_paths, "bg": bg_paths}
