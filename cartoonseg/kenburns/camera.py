"""Virtual camera of the 3D Ken Burns effect: motion presets, easing, and the automatic path.

Follows the camera model of "3D Ken Burns Effect from a Single Image" (Niklaus et al., SIGGRAPH Asia 2019, §3):
a 2-D crop window of the input is turned into a 3-D camera translation such that the points at an *anchor* depth
(by default the nearest point of the scene) move exactly like the 2-D crop, while everything farther away shows
parallax. The automatic path is the one CartoonSegmentation (arXiv 2312.01943, §6.1) uses: start at the centre
with a 0.97 crop, end at a crop 1.25x smaller whose centre is picked by a 16x16 grid search over shifts of up to
100 px (at a 1024 px long side) that maximises the pixels covered by the re-projected point cloud. Written from
those descriptions; no code of the original (CC BY-NC-SA) is used.

Geometry (all renderers of :mod:`cartoonseg.kenburns` share it). Pixel centres sit at integer coordinates, the
principal point is the image centre ``c = ((W-1)/2, (H-1)/2)`` and the focal length is ``f = max(H, W) / 2``
pixels. A source pixel ``(u, v)`` with depth ``Z`` is the point ``X = (u - c_x) Z / f``, ``Y = (v - c_y) Z / f``.
A camera *pose* is six numbers ``(t_x, t_y, t_z, k, p_x, p_y)``: translation ``t`` (scene units, the camera looks
along +Z without rotation), focal scale ``k`` and principal-point offset ``p`` (output pixels); it projects a point
to ``x' = c_x + p_x + k f (X - t_x) / (Z - t_z)`` (same for y).

A crop of zoom ``s`` (crop width = W / s) centred on source pixel ``q`` maps to ``t = ((q - c) Z_a / f, Z_a (1 -
1/s))``, ``k = 1``, ``p = 0``: at the anchor depth ``Z_a`` this is exactly the 2-D crop, and when the crop lies in
the image no point at depth >= ``Z_a`` projects from outside the input, so nothing off-image is revealed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..io import MAX_FRAMES, check_fps

__all__ = [
    "ANCHORS",
    "EASINGS",
    "PRESETS",
    "CameraPath",
    "CameraPoses",
    "anchor_depth",
    "ease",
    "frame_times",
    "playback_order",
    "resolve_poses",
    "search_auto_end",
]

PRESETS: tuple[str, ...] = (
    "auto",
    "static",
    "zoom-in",
    "zoom-out",
    "pan-left",
    "pan-right",
    "pan-up",
    "pan-down",
    "dolly-in",
    "dolly-out",
    "orbit",
)
EASINGS: tuple[str, ...] = ("linear", "ease-in", "ease-out", "ease-in-out", "smootherstep")
ANCHORS: tuple[str, ...] = ("nearest", "median", "farthest")

# The automatic path of the original, at its 1024 px working size.
AUTO_START_CROP = 0.97
AUTO_SEARCH_STEPS = 16
AUTO_SEARCH_PIXELS_AT_1024 = 100.0
# Fraction of each side ignored when looking for the anchor (the original skips a 128 px border at 1024 px).
ANCHOR_BORDER = 0.125
# Orbit and pan stay this far inside the available margin so bilinear splats never reach past the image edge.
MARGIN_SAFETY = 0.95


@dataclasses.dataclass(frozen=True)
class CameraPath:
    """What the camera does over the clip (resolution independent; resolved against a scene by
    :func:`resolve_poses`).

    Attributes:
        preset: one of :data:`PRESETS`. ``auto`` is the original's automatic path (zoom ``zoom`` towards the
            end crop that reveals the fewest holes); ``static`` keeps the input view; ``zoom-*``/``pan-*`` are
            crop moves with parallax; ``dolly-*`` is a dolly zoom (vertigo: the anchor keeps its size while the
            focal length changes); ``orbit`` circles the camera with the anchor fixed on screen.
        frames: rendered time steps (the original: 75), at most :data:`~cartoonseg.io.MAX_FRAMES` (10000).
        zoom: zoom factor of the move (end crop = start crop / zoom for ``auto``/``zoom-*``; the crop zoom that
            leaves room for ``pan-*``/``orbit``; the focal-length ratio of ``dolly-*``). Must be >= 1.
        strength: scales the move: the fraction of the available margin used by pans and the orbit, a multiplier
            on ``zoom - 1`` for zooms and dollies, and on the search range of ``auto``. In [0, 2].
        easing: time warp, one of :data:`EASINGS` (the original interpolates linearly).
        playback: append the reversed clip without its end frames (ping-pong), 75 -> 148 frames.
        fps: frames per second reported to the video saver (the original writes 25), in
            [:data:`~cartoonseg.io.MIN_FPS`, :data:`~cartoonseg.io.MAX_FPS`] = [0.01, 240].
        anchor: depth that moves like the 2-D crop: the ``nearest`` point (the original), the ``median`` or the
            ``farthest`` one, each over the image minus a 1/8 border.
    """

    preset: str = "auto"
    frames: int = 75
    zoom: float = 1.25
    strength: float = 1.0
    easing: str = "linear"
    playback: bool = True
    fps: float = 25.0
    anchor: str = "nearest"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"CameraPath.preset must be one of {PRESETS}, got {self.preset!r}")
        if self.easing not in EASINGS:
            raise ValueError(f"CameraPath.easing must be one of {EASINGS}, got {self.easing!r}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"CameraPath.anchor must be one of {ANCHORS}, got {self.anchor!r}")
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or not 1 <= self.frames <= MAX_FRAMES:
            raise ValueError(f"CameraPath.frames must be an int in [1, {MAX_FRAMES}], got {self.frames!r}")
        if not (math.isfinite(self.zoom) and 1.0 <= self.zoom <= 8.0):
            raise ValueError(f"CameraPath.zoom must lie in [1, 8], got {self.zoom!r}")
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= 2.0):
            raise ValueError(f"CameraPath.strength must lie in [0, 2], got {self.strength!r}")
        check_fps(self.fps, "CameraPath.fps")

    @property
    def total_frames(self) -> int:
        """Frames in the output clip: ``frames``, or ``2 * frames - 2`` with playback (at least ``frames``)."""
        return len(playback_order(self.frames, self.playback))


@dataclasses.dataclass(frozen=True)
class CameraPoses:
    """Resolved per-frame cameras of one clip.

    Attributes:
        poses: float32 ``[T,6]`` rows ``(t_x, t_y, t_z, k, p_x, p_y)`` (see the module docstring), one per
            *unique* time step (playback frames are not repeated here).
        times: float32 ``[T]`` clip time in [0, 1] of each pose (before easing; used for rack focus).
        order: int64 ``[T_out]`` index into ``poses`` of every output frame (ping-pong when playback is on).
        focal: focal length in pixels of the image size the poses were resolved for.
        anchor: the anchor depth ``Z_a``.
        fps: frames per second of the output.
    """

    poses: Tensor
    times: Tensor
    order: Tensor
    focal: float
    anchor: float
    fps: float

    def __len__(self) -> int:
        return int(self.order.numel())


# ---------------------------------------------------------------------------------------------- time warps
def _smootherstep(t: Tensor) -> Tensor:
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0)


_EASE: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda t: t,
    "ease-in": lambda t: t * t,
    "ease-out": lambda t: 1.0 - (1.0 - t) * (1.0 - t),
    "ease-in-out": lambda t: 0.5 - 0.5 * torch.cos(math.pi * t),
    "smootherstep": _smootherstep,
}


def ease(t: Tensor, easing: str) -> Tensor:
    """Monotone time warp of ``t`` in [0, 1] with ``ease(0) = 0`` and ``ease(1) = 1``.

    Args:
        t: times ``[T]`` in [0, 1].
        easing: one of :data:`EASINGS`.
    """
    if easing not in _EASE:
        raise ValueError(f"easing must be one of {EASINGS}, got {easing!r}")
    return _EASE[easing](t.clamp(0.0, 1.0))


def frame_times(frames: int) -> Tensor:
    """``frames`` evenly spaced times from 0 to 1 (a single frame sits at 0), float32 ``[frames]``."""
    if frames == 1:
        return torch.zeros(1)
    return torch.linspace(0.0, 1.0, frames)


def playback_order(frames: int, playback: bool) -> Tensor:
    """Indices of the output frames: ``0..F-1``, followed by ``F-2..1`` when ``playback`` (ping-pong without
    repeating the end frames, the original's ``frames + frames[::-1][1:-1]``)."""
    forward = torch.arange(frames)
    if not playback or frames < 3:
        return forward
    return torch.cat([forward, forward.flip(0)[1:-1]])


# ---------------------------------------------------------------------------------------------- anchor
def anchor_depth(depth: Tensor, mode: str = "nearest") -> float:
    """The anchor depth of a depth map: its nearest (0.2 % quantile, robust to single-pixel noise), median
    or farthest (99.8 % quantile) value over the image minus a 1/8 border on each side.

    Args:
        depth: ``[H,W]`` positive depth (larger = farther).
        mode: one of :data:`ANCHORS`.
    """
    if mode not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {mode!r}")
    h, w = depth.shape[-2:]
    by, bx = int(h * ANCHOR_BORDER), int(w * ANCHOR_BORDER)
    inner = depth[..., by : h - by, bx : w - bx] if h - 2 * by > 0 and w - 2 * bx > 0 else depth
    values = inner.reshape(-1).float()
    values = values[torch.isfinite(values) & (values > 0)]
    if values.numel() == 0:
        raise ValueError("anchor_depth: the depth map has no finite positive value")
    if values.numel() > 1 << 22:  # quantile's input limit; a strided subsample is plenty for a quantile
        values = values[:: values.numel() // (1 << 22) + 1]
    q = {"nearest": 0.002, "median": 0.5, "farthest": 0.998}[mode]
    return float(torch.quantile(values, q))


# ---------------------------------------------------------------------------------------------- poses
def _crop_poses(cx: Tensor, cy: Tensor, zoom: Tensor, z_a: float, focal: float) -> Tensor:
    """Poses ``[T,6]`` of crops centred ``cx, cy`` pixels from the image centre with zoom ``zoom`` (see the
    module docstring)."""
    tx = cx * z_a / focal
    ty = cy * z_a / focal
    tz = z_a * (1.0 - 1.0 / zoom)
    ones, zeros = torch.ones_like(tx), torch.zeros_like(tx)
    return torch.stack([tx, ty, tz, ones, zeros, zeros], 1)


def _crop_path(start: tuple[float, float, float], end: tuple[float, float, float], u: Tensor, z_a: float, focal: float):
    """Interpolate crop centre and crop *width* (= 1/zoom) linearly in the warped time ``u``, as the original
    does, so the camera translation is linear in ``u``."""
    (x0, y0, s0), (x1, y1, s1) = start, end
    cx = x0 + (x1 - x0) * u
    cy = y0 + (y1 - y0) * u
    inv = 1.0 / s0 + (1.0 / s1 - 1.0 / s0) * u
    return _crop_poses(cx, cy, 1.0 / inv, z_a, focal)


def resolve_poses(
    path: CameraPath,
    depth: Tensor,
    *,
    coverage_fn: Callable[[Tensor], Tensor] | None = None,
) -> CameraPoses:
    """Turn a :class:`CameraPath` into per-frame camera poses for a scene.

    Args:
        path: the camera motion.
        depth: ``[H,W]`` scene depth (larger = farther) of the image the poses are for.
        coverage_fn: for ``preset="auto"``: maps candidate poses ``[K,6]`` to the count of covered output
            pixels ``[K]`` (see :func:`search_auto_end`); required for ``auto``.

    Returns:
        The poses, their times, the output frame order and the camera constants.
    """
    if depth.dim() != 2:
        raise ValueError(f"depth must be [H,W], got shape {tuple(depth.shape)}")
    h, w = depth.shape
    focal = max(h, w) / 2.0
    z_a = anchor_depth(depth, path.anchor)
    times = frame_times(path.frames)
    u = ease(times, path.easing)
    margin_x, margin_y = 0.5 * (w - 1), 0.5 * (h - 1)
    zoom_eff = 1.0 + path.strength * (path.zoom - 1.0)

    if path.preset == "static":
        poses = _crop_poses(torch.zeros_like(u), torch.zeros_like(u), torch.ones_like(u), z_a, focal)
    elif path.preset in ("zoom-in", "zoom-out"):
        start, end = (0.0, 0.0, 1.0), (0.0, 0.0, zoom_eff)
        if path.preset == "zoom-out":
            start, end = end, start
        poses = _crop_path(start, end, u, z_a, focal)
    elif path.preset.startswith("pan-"):
        zoom = max(path.zoom, 1.0)
        reach = min(path.strength, 1.0) * MARGIN_SAFETY
        mx, my = reach * margin_x * (1.0 - 1.0 / zoom), reach * margin_y * (1.0 - 1.0 / zoom)
        direction = {"pan-left": (-1.0, 0.0), "pan-right": (1.0, 0.0), "pan-up": (0.0, -1.0), "pan-down": (0.0, 1.0)}
        dx, dy = direction[path.preset]
        poses = _crop_path((-dx * mx, -dy * my, zoom), (dx * mx, dy * my, zoom), u, z_a, focal)
    elif path.preset in ("dolly-in", "dolly-out"):
        # Dolly zoom: the anchor keeps its on-screen size (k Z_a / (Z_a - t_z) = 1) while the focal scale k runs
        # from zoom_eff to 1 (dolly-in: the camera moves forward and widens, the background recedes). k >= 1
        # keeps the far field inside the input.
        k0, k1 = (zoom_eff, 1.0) if path.preset == "dolly-in" else (1.0, zoom_eff)
        k = k0 + (k1 - k0) * u
        tz = z_a * (1.0 - k)
        zeros = torch.zeros_like(k)
        poses = torch.stack([zeros, zeros, tz, k, zeros, zeros], 1)
    elif path.preset == "orbit":
        # The camera circles in the image plane; a principal-point shift keeps the anchor fixed on screen, so the
        # scene behind it sweeps round (an off-axis approximation of a small orbit). The crop zoom leaves a margin.
        zoom = max(path.zoom, 1.0)
        reach = min(path.strength, 1.0) * MARGIN_SAFETY
        ax, ay = reach * margin_x * (1.0 - 1.0 / zoom), reach * margin_y * (1.0 - 1.0 / zoom)
        theta = 2.0 * math.pi * u
        tx = ax * torch.sin(theta) * z_a / focal
        ty = ay * (torch.cos(theta) - 1.0) * 0.5 * z_a / focal
        # at t_z = 0, p = k f t / Z_a
        px, py = zoom * focal * tx / z_a, zoom * focal * ty / z_a
        poses = torch.stack([tx, ty, torch.zeros_like(tx), torch.full_like(tx, zoom), px, py], 1)
    else:  # auto
        if coverage_fn is None:
            raise ValueError("resolve_poses: preset 'auto' needs coverage_fn (the renderer supplies it)")
        s0 = 1.0 / AUTO_START_CROP
        s1 = s0 * max(path.zoom, 1.0)
        end_x, end_y = search_auto_end((h, w), s1, z_a, focal, coverage_fn, strength=path.strength)
        poses = _crop_path((0.0, 0.0, s0), (end_x, end_y, s1), u, z_a, focal)

    order = playback_order(path.frames, path.playback)
    return CameraPoses(poses=poses.float(), times=times, order=order, focal=focal, anchor=z_a, fps=float(path.fps))


def search_auto_end(
    size: tuple[int, int],
    zoom: float,
    z_a: float,
    focal: float,
    coverage_fn: Callable[[Tensor], Tensor],
    *,
    strength: float = 1.0,
    steps: int = AUTO_SEARCH_STEPS,
) -> tuple[float, float]:
    """The end-crop centre of the automatic path: a ``steps x steps`` grid of shifts within +-100 px (at a 1024 px
    long side, scaled with the image and by ``strength``); shifts whose crop leaves the image are rejected; the
    winner has the most covered pixels (ties go to the smaller shift).

    Args:
        size: ``(H, W)`` of the image.
        zoom: zoom of the end crop relative to the full image.
        z_a: anchor depth.
        focal: focal length in pixels.
        coverage_fn: candidate poses ``[K,6]`` -> covered pixel counts ``[K]``.

    Returns:
        ``(dx, dy)``: end-crop centre in pixels from the image centre.
    """
    h, w = size
    reach = AUTO_SEARCH_PIXELS_AT_1024 * max(h, w) / 1024.0 * strength
    if reach <= 0.0 or steps < 2:
        return 0.0, 0.0
    grid = torch.linspace(-reach, reach, steps)
    sy, sx = torch.meshgrid(grid, grid, indexing="ij")
    sx, sy = sx.reshape(-1), sy.reshape(-1)
    # the crop (W/zoom x H/zoom, centred at c + shift) must stay inside the image
    inside = (sx.abs() <= 0.5 * w * (1.0 - 1.0 / zoom)) & (sy.abs() <= 0.5 * h * (1.0 - 1.0 / zoom))
    if not bool(inside.any()):
        return 0.0, 0.0
    sx, sy = sx[inside], sy[inside]
    poses = _crop_poses(sx, sy, torch.full_like(sx, zoom), z_a, focal)
    covered = coverage_fn(poses).double().cpu()
    distance = torch.sqrt(sx.double() ** 2 + sy.double() ** 2)
    score = covered - 1e-6 * distance  # deterministic tie-break towards the centre
    best = int(torch.argmax(score))
    return float(sx[best]), float(sy[best])
