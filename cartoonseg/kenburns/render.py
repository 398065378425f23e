"""Instance-aware 3D Ken Burns rendering: one image + depth + character masks + background plate -> video frames.

Follows CartoonSegmentation (arXiv 2312.01943, §6.1, Fig. 7) on top of the 3D Ken Burns effect (Niklaus et al.
2019): the depth map becomes a point cloud seen through a moving pinhole camera, and the character instances are
separate depth layers in front of a background layer built from an inpainted plate, so a disocclusion behind a
character shows background and never a smeared copy of the character. Written from the papers' descriptions; no
code of the original (CC BY-NC-SA) is used.

Pipeline of :func:`render_kenburns`:

1. Resize to the working size; depth is *nearness* (disparity-like, larger = nearer; the ComfyUI depth-map
   convention), normalised by its maximum and floored at ``min_disparity``; scene depth ``Z = 1 / nearness``
   (only depth ratios matter, so the original's focal/baseline scale cancels).
2. Layers: the **background** covers every pixel: the input outside the character support (mask or, with
   ``Instances.alphas``, alpha matte > 1/255), the
   background plate inside it (without a plate: inpainted by the fill's inpainter, or a smooth fill for
   ``far-side``), with depth interpolated along rows from both sides of the characters (a ground plane and a wall
   continue behind an upright character) and pushed behind them. Each group of characters (sorted by depth, at
   most ``max_layers - 1`` groups) is a **character layer** whose alpha is the soft instance mask (the alpha matte
   when the instances carry ``alphas``: hair strands and anti-aliased outlines) and whose colour is un-mixed from
   the plate (alpha matting), so edges carry no background. Overlapping characters: the masks are what each adds
   to a pixel, composed front to back, and a layer's alpha is its share over what the layers in front leave, so a
   farther character's edge where a nearer one meets it is opaque and keeps its own colour (continued from its
   inside) instead of being un-mixed against the plate (see :func:`_unmix_layers`). A mask's pixels below one
   half (a soft edge, a matte past the masks), where the depth map shows what lies behind, take the depth of the
   nearest mask pixel; a ring of transparent points around it makes its edge resample like its inside (no growth
   when it moves).
3. Camera poses from :class:`~cartoonseg.kenburns.camera.CameraPath` (``auto`` searches the end crop with the
   fewest holes, as in the original).
4. Disocclusions (``fill`` ``patchmatch`` or ``diffusion``): the key views of the path (its extremes, more if it
   turns) are rendered, their holes inpainted (colour by the inpainter, depth from the far side) and lifted into
   the background layer behind their occluders (:mod:`cartoonseg.kenburns.disocclusion`). By default
   (``character_reveals="key-views"``) that includes what the key views reveal behind the characters, which then
   replaces the plate there.
5. Per frame batch: every layer is splatted (z-buffer + bilinear accumulation + crack filling); remaining background
   holes are filled from the farther side; layers are composited front to back after a per-pixel depth sort.
6. Optional depth of field (rack focus to the nearest character, from the far end of the depth range or, when that
   character stands in its farther half, from the near end).

Outputs are frames ``[T,H,W,3]`` RGB in [0,1], a disocclusion mask ``[T,H,W]`` (1 where the colour was not visible
in the input: filled holes and revealed background plate) and the fps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..compositing import over_opacity, unmix_over_plate
from ..io import to_float_mask, to_float_rgb
from ..ops import grow_mask
from ..structures import EXTRA_DEPTH
from ..transforms import check_same_aspect
from .camera import CameraPath, CameraPoses, resolve_poses
from .depth_edges import refine_depth_edges
from .disocclusion import CHARACTER_REVEALS, FILLS, KeyViewReport, Refiner, inpaint_disocclusions, inpaint_plate
from .dof import bokeh_blur, focus_schedule
from .fill import fill_holes_far, fill_push_pull, fill_rows
from .pointcloud import PointCloud, SplatResult, project, splat, unproject

__all__ = [
    "KenBurnsConfig", "KenBurnsResult", "Scene", "build_scene", "frame_size", "inpaint_scene", "render_kenburns",
    "render_poses",
]

MIN_SIDE = 8
MAX_SIDE = 8192
#: Memory budget of one rendered clip: frames x height x width x 4 values (RGB frames + disocclusion masks), 2**32,
#: 16 GiB as float32 (e.g. 1024² x 1000 frames, 4096² x 64). A larger clip is a ``ValueError`` naming the remedy
#: before any work, instead of an allocator failure after the inpainting; assign a larger value to the module
#: attribute on machines with the memory for it.
MAX_CLIP_ELEMENTS = 1 << 32
# Pixels by which the character support grows for a plate inpainted here (its rim is not copied from).
PLATE_MARGIN = 2
# Channels carried by every layer's points: premultiplied RGB, alpha, "revealed" (plate content), "hole".
_RGB, _ALPHA, _REVEALED, _HOLE = slice(0, 3), 3, 4, 5
_CHANNELS = 6
# Transparent points (alpha 0) added around every character layer, in pixels: with them a layer's edge is resampled
# like its inside (bilinear weights over transparent neighbours), instead of normalising a partly covered edge pixel
# to full opacity, which fattened characters by about half a pixel in every moving frame.
TRANSPARENT_RING = 2


@dataclasses.dataclass(frozen=True)
class KenBurnsConfig:
    """Rendering options (the camera motion is a :class:`~cartoonseg.kenburns.camera.CameraPath`).

    Attributes:
        size: long side of the rendered frames in pixels; 0 keeps the input size (the original works at 1024). An
            image so thin that its short side would fall under 8 px is rendered with that side at 8 px and its
            aspect kept (the long side is then longer than ``size``).
        min_disparity: floor of the normalised nearness: the farthest depth is at most ``1/min_disparity`` times
            the nearest one (a zero in a depth map means "far", not "infinitely far").
        max_layers: layers in all: the background plus up to ``max_layers - 1`` character groups.
        plate_dilation: pixels by which the character support (mask > 1/255) is grown before the background plate
            replaces the input there; use 1-3 when masks are too tight and leave a character outline behind (the
            static view then shows the plate in that ring). 0 keeps the input exact at a static camera.
        z_tolerance: relative depth band blended by the z-buffer.
        far_tolerance: relative depth band counted as the far side when filling holes.
        behind_margin: the background under a character is pushed at least this fraction behind it.
        depth_of_field: render the rack focus (costly on CPU).
        dof_strength: blur radius scale (1: about 0.8 % of the short side at full defocus).
        dof_speed: steepness of the mid-clip focus ramp (the original: 50).
        dof_gamma: lightness exponent of the bokeh (the original: 13).
        frame_batch: frames rendered together; 0 picks from the point count and device.
        fill: how disocclusions are filled, one of :data:`~cartoonseg.kenburns.disocclusion.FILLS`:
            ``patchmatch`` (default: end-view inpainting with PatchMatch, no model needed), ``diffusion`` (end-view
            inpainting with a diffusion inpainter passed to :func:`render_kenburns`), ``far-side`` (per-frame
            smear from the farther side of each hole, the fastest).
        key_views: at most this many views of the path are inpainted (the original: its 2 extremes; paths that
            turn need more). 0 leaves everything to the far-side fill.
        key_view_overshoot: key views are rendered this many times as far from the input view as the path pose
            (the original: 1.1), so frames next to them are covered too.
        near_band: pixels of the occluder side around a hole that are masked for the colour inpainting (depth-aware
            fill); -1 = 0.5 % of the long side (at least 2).
        character_reveals: what a frame shows where the camera reveals background that the characters hid, one of
            :data:`~cartoonseg.kenburns.disocclusion.CHARACTER_REVEALS` (``patchmatch`` and ``diffusion`` fills):
            ``key-views`` (default) inpaints it in the key views like every other disocclusion, with the characters
            as occluders (as the original does; better than a PatchMatch plate, see the README's quality table),
            and the plate shows only where no key view reaches; ``plate`` shows the background plate as given (use
            it with a real background, e.g. a drawn background layer).
        plane_guidance: the ``patchmatch`` and ``diffusion`` fills inpaint what lies on a slanted plane of the
            scene (a ground, a floor: found in the depth map) in the plane's own coordinates, so its pattern keeps
            its perspective, and lift it at the plane's depth (:mod:`cartoonseg.kenburns.planes`); False fills
            everything in image space as before.
        depth_refine: snap the ramps a depth estimator leaves at depth edges to their near or far side, guided by
            the image (:func:`~cartoonseg.kenburns.depth_edges.refine_depth_edges`), before the layers are built,
            so a moved camera opens a hole there instead of showing a smeared skin of points. For an estimator's
            depth (Depth Anything V2 and the like); a depth with sharp steps (exact, drawn) and slanted grounds are
            left as they are. On by default (see the README's quality figures: +0.53 dB on estimator-like depth,
            exact depth unchanged).
    """

    size: int = 0
    min_disparity: float = 0.02
    max_layers: int = 8
    plate_dilation: int = 0
    z_tolerance: float = 0.03
    far_tolerance: float = 0.1
    behind_margin: float = 0.05
    depth_of_field: bool = False
    dof_strength: float = 1.0
    dof_speed: float = 50.0
    dof_gamma: float = 13.0
    frame_batch: int = 0
    fill: str = "patchmatch"
    key_views: int = 4
    key_view_overshoot: float = 1.1
    near_band: int = -1
    character_reveals: str = "key-views"
    plane_guidance: bool = True
    depth_refine: bool = True

    def __post_init__(self) -> None:
        if not (self.size == 0 or MIN_SIDE <= self.size <= MAX_SIDE):
            raise ValueError(f"KenBurnsConfig.size must be 0 or in [{MIN_SIDE}, {MAX_SIDE}], got {self.size}")
        if not 1e-4 <= self.min_disparity <= 1.0:
            raise ValueError(f"KenBurnsConfig.min_disparity must lie in [1e-4, 1], got {self.min_disparity}")
        if not 1 <= self.max_layers <= 64:
            raise ValueError(f"KenBurnsConfig.max_layers must lie in [1, 64], got {self.max_layers}")
        if not 0 <= self.plate_dilation <= 64:
            raise ValueError(f"KenBurnsConfig.plate_dilation must lie in [0, 64], got {self.plate_dilation}")
        for name in ("z_tolerance", "far_tolerance", "behind_margin"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"KenBurnsConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.dof_strength <= 10.0:
            raise ValueError(f"KenBurnsConfig.dof_strength must lie in [0, 10], got {self.dof_strength}")
        if not 0.0 <= self.dof_speed <= 1000.0:
            raise ValueError(f"KenBurnsConfig.dof_speed must lie in [0, 1000], got {self.dof_speed}")
        if not 0.1 <= self.dof_gamma <= 32.0:
            raise ValueError(f"KenBurnsConfig.dof_gamma must lie in [0.1, 32], got {self.dof_gamma}")
        if self.frame_batch < 0:
            raise ValueError(f"KenBurnsConfig.frame_batch must be >= 0, got {self.frame_batch}")
        if self.fill not in FILLS:
            raise ValueError(f"KenBurnsConfig.fill must be one of {FILLS}, got {self.fill!r}")
        if not 0 <= self.key_views <= 16:
            raise ValueError(f"KenBurnsConfig.key_views must lie in [0, 16], got {self.key_views}")
        if not 1.0 <= self.key_view_overshoot <= 2.0:
            raise ValueError(f"KenBurnsConfig.key_view_overshoot must lie in [1, 2], got {self.key_view_overshoot}")
        if not -1 <= self.near_band <= 256:
            raise ValueError(f"KenBurnsConfig.near_band must be -1 (auto) or in [0, 256], got {self.near_band}")
        if self.character_reveals not in CHARACTER_REVEALS:
            raise ValueError(f"KenBurnsConfig.character_reveals must be one of {CHARACTER_REVEALS}, got "
                             f"{self.character_reveals!r}")


@dataclasses.dataclass
class Scene:
    """A layered scene ready to render (see :func:`build_scene`).

    Attributes:
        size: ``(H, W)`` of the frames.
        depth: ``[H,W]`` scene depth of the input view (larger = farther).
        layers: point clouds, background first (features: premultiplied RGB, alpha, revealed, hole).
        focus_nearness: nearness in [0,1] of the subject that ends in focus (depth of field).
        z_near: nearest scene depth (nearness normalisation for depth of field).
        z_far: farthest scene depth.
        background_depth: ``[H,W]`` depth of the background layer in the input view (the characters' support
            pushed behind them).
        plate: ``[N]`` bool per point of the background layer: the points that show the background plate (the
            characters' support); None without characters.
    """

    size: tuple[int, int]
    depth: Tensor
    layers: list[PointCloud]
    focus_nearness: float
    z_near: float
    z_far: float
    background_depth: Tensor | None = None
    plate: Tensor | None = None


@dataclasses.dataclass
class KenBurnsResult:
    """Rendered clip.

    Attributes:
        frames: ``[T,H,W,3]`` RGB in [0,1].
        disocclusion: ``[T,H,W]`` in [0,1]: 1 where the colour was not visible in the input: a filled hole, or
            background plate that a character hid (weighted by the character's alpha, so a static camera gives
            0 with binary masks and at most ``a (1 - a)`` on soft edges).
        fps: frames per second.
        poses: the camera poses used.
        key_views: what the disocclusion inpainting did (None for ``fill="far-side"``).
    """

    frames: Tensor
    disocclusion: Tensor
    fps: float
    poses: CameraPoses
    key_views: KeyViewReport | None = None


# ---------------------------------------------------------------------------------------------- input handling
def _as_hwc(image: Tensor, name: str) -> Tensor:
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [H,W,3], got {type(image).__name__}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() == 2:
        image = image[..., None]
    if image.dim() != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{name} must be [H,W,3] (or [H,W,1]/[H,W,2]/[H,W,4]), got shape {tuple(image.shape)}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}")
    return to_float_rgb(image, name=name)  # uint8 0..255 (not clamped to white), grey expanded, alpha dropped


def _nearness(depth: Tensor) -> Tensor:
    if not isinstance(depth, Tensor):
        raise TypeError(f"depth must be a torch.Tensor [H,W] or [H,W,C], got {type(depth).__name__}")
    if depth.dim() == 4 and depth.shape[0] == 1:
        depth = depth[0]
    if depth.dim() == 3:
        if depth.shape[-1] in (1, 3, 4):
            depth = depth[..., :3].float().mean(-1)  # grey depth IMAGE: the channels are equal
        else:
            raise ValueError(f"depth must be [H,W] or [H,W,C] with C in 1/3/4, got shape {tuple(depth.shape)}")
    if depth.dim() != 2 or depth.numel() == 0:
        raise ValueError(f"depth must be [H,W] or [H,W,C], got shape {tuple(depth.shape)}")
    return torch.nan_to_num(depth.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)


def _masks(masks, size_hw: tuple[int, int]) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Soft masks ``[N,H,W]`` from an Instances-like object or a tensor, plus optional per-instance depth and the
    instances' alpha mattes (``Instances.alphas``, None without)."""
    extra_depth, mattes = None, None
    if masks is None:
        return torch.zeros(0, *size_hw), None, None
    if hasattr(masks, "masks") and isinstance(getattr(masks, "masks"), Tensor):
        extras = getattr(masks, "extras", {}) or {}
        values = extras.get(EXTRA_DEPTH)
        if values is not None and len(values) == masks.masks.shape[0] and all(v is not None for v in values):
            extra_depth = torch.tensor([float(v) for v in values])
        alphas = getattr(masks, "alphas", None)
        if isinstance(alphas, Tensor) and tuple(alphas.shape) == tuple(masks.masks.shape):
            mattes = torch.nan_to_num(alphas.float(), nan=0.0).clamp(0.0, 1.0)
        masks = masks.masks
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be an Instances or a tensor [N,H,W], got {type(masks).__name__}")
    if masks.dim() == 2:
        masks = masks[None]
    if masks.dim() != 3:
        raise ValueError(f"masks must be [N,H,W], got shape {tuple(masks.shape)}")
    if tuple(masks.shape[1:]) != tuple(size_hw):
        # stretching them over the image would put every character layer in the wrong place
        raise ValueError(f"masks are {masks.shape[2]}x{masks.shape[1]} px but the image is {size_hw[1]}x{size_hw[0]}; "
                         "give masks of the image (segment the image that is rendered)")
    return to_float_mask(masks, name="masks"), extra_depth, mattes  # uint8 0..255, bool 0/1, float clipped


def _check_clip_budget(image, camera: CameraPath, config: KenBurnsConfig) -> None:
    """``ValueError`` when the clip's frames and masks would exceed :data:`MAX_CLIP_ELEMENTS` (checked first)."""
    import sys

    h, w = _working_size(*_as_hwc(image, "image").shape[:2], config.size)
    n = camera.total_frames
    total = n * h * w * 4
    budget = sys.modules[__name__].MAX_CLIP_ELEMENTS
    if total > budget:
        raise ValueError(
            f"a clip of {n} frames of {w}x{h} pixels ({4 * total / 2**30:.1f} GiB as float32 with its disocclusion "
            f"masks) exceeds the memory budget of {budget / 2**30:.1f} Gi values "
            f"(cartoonseg.kenburns.render.MAX_CLIP_ELEMENTS); use a smaller size or fewer frames")


def _working_size(h: int, w: int, size: int) -> tuple[int, int]:
    if size == 0:
        if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
            raise ValueError(
                f"image of {w}x{h} px is outside the supported range ({MIN_SIDE}..{MAX_SIDE} px per side); "
                "set size to resize it"
            )
        return h, w
    scale = size / max(h, w)
    if round(min(h, w) * scale) < MIN_SIDE:  # a sliver: its short side is enlarged to the minimum, keeping the aspect
        scale = MIN_SIDE / min(h, w)
    nh, nw = max(MIN_SIDE, round(h * scale)), max(MIN_SIDE, round(w * scale))
    if max(nh, nw) > MAX_SIDE:
        raise ValueError(f"image of {w}x{h} px is too thin: a short side of {MIN_SIDE} px (the least rendered) makes "
                         f"its long side {max(nh, nw)} px, over the {MAX_SIDE} px limit")
    return nh, nw


def frame_size(image_hw: tuple[int, int], size: int = 0) -> tuple[int, int]:
    """The ``(height, width)`` of the frames :func:`render_kenburns` renders for an image of ``image_hw`` pixels
    with ``KenBurnsConfig(size=size)``: the image's own size for ``size=0``, else its long side scaled to ``size``
    (aspect kept; a sliver's short side is taken to :data:`MIN_SIDE` px). Callers use it to check an output format
    or a memory budget before the slow steps (depth, segmentation, inpainting).

    Raises:
        ValueError: an image the renderer refuses: ``size=0`` with a side outside [MIN_SIDE, MAX_SIDE], or one so
            thin that its long side would exceed :data:`MAX_SIDE` at the least short side.
    """
    h, w = (int(v) for v in image_hw)
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {w}x{h} px")
    return _working_size(h, w, int(size))


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``[C,H,W]`` -> ``[C,h,w]``: area when shrinking, bilinear when enlarging."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] <= x.shape[-2] and size[1] <= x.shape[-1]
    mode = "area" if shrinking else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x[None], size=size, mode=mode, **kwargs)[0]


# ---------------------------------------------------------------------------------------------- scene
def build_scene(
    image: Tensor,
    depth: Tensor,
    masks=None,
    background: Tensor | None = None,
    *,
    config: KenBurnsConfig = KenBurnsConfig(),
    device: torch.device | str | None = None,
    plate_fill: bool = False,
    refiner: Refiner | None = None,
    interrupt: Callable[[], None] | None = None,
) -> Scene:
    """Build the layered point clouds.

    Args:
        image: ``[H,W,3]`` RGB in [0,1] (``[1,H,W,3]`` accepted).
        depth: ``[H,W]`` or ``[H,W,C]`` nearness, larger = nearer (any positive scale; resized to the image).
        masks: character instances: a :class:`cartoonseg.Instances` (its ``extras["depth"]``, if present, orders
            the layers; its ``alphas``, if present, are the character layers' alpha) or soft masks ``[N,H,W]``
            in [0,1], of the image's size (ValueError otherwise); ``None`` or
            empty renders a single layer.
        background: ``[H,W,3]`` inpainted background plate (used inside the dilated character union), resized to
            the image (another aspect ratio raises ValueError); ``None`` inpaints that region (``plate_fill``) or
            fills it smoothly from around it.
        config: rendering options.
        device: where to render (default: the image's device).
        plate_fill: without ``background``, make the plate by PatchMatch (patch 3), then ``refiner`` if given.
        refiner: diffusion pass over the PatchMatch plate (see :data:`~cartoonseg.kenburns.disocclusion.Refiner`).
        interrupt: cancel check during the plate's PatchMatch.

    Returns:
        The scene.
    """
    image = _as_hwc(image, "image")
    device = torch.device(device) if device is not None else image.device
    h0, w0 = image.shape[:2]
    h, w = _working_size(h0, w0, config.size)
    rgb = _resize(image.to(device).permute(2, 0, 1), (h, w)).clamp(0.0, 1.0)  # [3,H,W]
    near = _resize(_nearness(depth).to(device)[None], (h, w))[0]
    peak = float(near.max())
    if not math.isfinite(peak) or peak <= 0.0:
        near = torch.ones_like(near)  # no usable depth: a flat scene
    else:
        near = near / peak
    near = near.clamp(config.min_disparity, 1.0)
    if config.depth_refine:
        near = refine_depth_edges(near, rgb)
    z = 1.0 / near

    soft, extra_depth, mattes = _masks(masks, (h0, w0))
    soft = soft.to(device)
    if soft.shape[0] > 0:
        if soft.shape[1:] != (h, w):
            soft = F.interpolate(soft[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0.0, 1.0)
        keep = soft.flatten(1).amax(1) > 0.5  # drop empty instances
        soft = soft[keep]
        extra_depth = extra_depth[keep.cpu()] if extra_depth is not None else None
        if mattes is not None:
            mattes = mattes.to(device)
            if mattes.shape[1:] != (h, w):
                mattes = F.interpolate(mattes[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            mattes = mattes.clamp(0.0, 1.0)[keep]
    # what the characters cover: their soft masks, or with alpha mattes the mattes (composed front to back, so a
    # group's coverage is their sum); the plate region covers both supports, so no half-transparent character
    # colour (a hair strand past the mask) stays in the background layer
    def coverage(index) -> Tensor:
        if mattes is None:
            return soft[index].amax(0)
        return mattes[index].sum(0).clamp(0.0, 1.0)

    layers: list[PointCloud] = []
    if soft.shape[0] == 0:
        region = torch.zeros(h, w, dtype=torch.bool, device=device)
        bg_rgb, bg_z = rgb, z
    else:
        union = soft.amax(0)
        if mattes is not None:
            union = torch.maximum(union, mattes.sum(0).clamp(0.0, 1.0))
        region = grow_mask(union > 1.0 / 255.0, config.plate_dilation)
        outside = (~region)[None, None]
        if background is not None:
            background = _as_hwc(background, "background")
            check_same_aspect(background.shape[:2], (h0, w0))
            plate = _resize(background.to(device).permute(2, 0, 1), (h, w)).clamp(0.0, 1.0)
        elif plate_fill and not bool(grow_mask(region, PLATE_MARGIN + 1).all()):
            # a small margin keeps the characters' anti-aliased rim out of the copied patches
            plate = inpaint_plate(rgb.permute(1, 2, 0), grow_mask(region, PLATE_MARGIN), refiner=refiner,
                                  interrupt=interrupt).permute(2, 0, 1)
        else:
            plate = fill_push_pull(rgb[None], outside)[0]
        bg_rgb = torch.where(region[None], plate, rgb)
        # background depth behind the characters: interpolated (in nearness) along rows from both sides of them (see
        # fill_rows), then pushed behind
        bg_near = fill_rows(near[None, None], outside)[0, 0].clamp(config.min_disparity, 1.0)
        bg_z = torch.where(region, torch.maximum(1.0 / bg_near, z * (1.0 + config.behind_margin)), z)

    ones = torch.ones(1, h, w, device=device)
    groups = _depth_groups(soft, z, extra_depth, config.max_layers - 1) if soft.shape[0] > 0 else []
    claims = soft if mattes is None else mattes
    visible = _visible_fractions(claims, groups)
    # "revealed": the fraction of each background pixel that the characters hid in the input (their alpha)
    if soft.shape[0] == 0:
        hidden = torch.zeros_like(ones)
    else:
        hidden = sum(visible if groups else _visible_fractions(claims, [list(range(soft.shape[0]))]))[None]
    bg_features = torch.cat([bg_rgb, ones, hidden, torch.zeros_like(ones)], 0)
    layers.append(unproject(bg_z, bg_features))
    plate_points = region[torch.isfinite(bg_z) & (bg_z > 0)] if soft.shape[0] > 0 else None

    if groups:
        unmixed = _unmix_layers(rgb, bg_rgb, visible, [coverage(group) for group in groups])
        clouds: list[PointCloud] = []
        front_z = torch.zeros_like(z)  # the farthest depth of the nearer groups where they show
        for group, (alpha, premult) in reversed(list(zip(groups, unmixed))):
            feats = torch.cat([premult, alpha[None], torch.zeros(2, h, w, device=device)], 0)
            # where the mask is below one half (its soft edge, a matte's hair strand past it) the depth map may show
            # what lies behind (the background, or the farther character at the edge where a nearer one meets it):
            # those points take the depth of the nearest pixel of the group's masks and move with the character.
            # In the input view the layers keep their order at every pixel (in front of the background, behind
            # the nearer groups; ties go to the nearer layer), so a static camera composites them as un-mixed
            inside = alpha > 1.0 / 255.0
            at = torch.maximum(torch.minimum(_nearest_depth(z, soft[group].amax(0) > 0.5), bg_z), front_z)
            clouds.append(unproject(_edge_depth(at, inside), feats, keep=grow_mask(inside, TRANSPARENT_RING)))
            front_z = torch.where(inside, torch.maximum(front_z, at), front_z)
        layers.extend(clouds[::-1])

    z_near, z_far = float(z.min()), float(z.max())
    focus = _focus_nearness(soft, near, float(near.min()))
    return Scene(size=(h, w), depth=z, layers=layers, focus_nearness=focus, z_near=z_near, z_far=z_far,
                 background_depth=bg_z, plate=plate_points)


def _visible_fractions(claims: Tensor, groups: list[list[int]]) -> list[Tensor]:
    """What each group of characters adds to each pixel of the input, ``[H,W]`` per group (far to near): the
    instances' soft masks or mattes (``claims`` ``[N,H,W]``) composed front to back, so they sum to at most 1 and
    a nearer instance keeps what it claims where two masks overlap (segmentation masks are visible regions: where
    two characters meet they share the pixel, ``a_far + a_near <= 1``)."""
    out: list[Tensor] = []
    if not groups:
        return out
    taken = torch.zeros_like(claims[0])
    for group in reversed(groups):
        part = torch.zeros_like(taken)
        for i in reversed(group):
            share = torch.minimum(claims[i], (1.0 - taken).clamp_min(0.0))
            part, taken = part + share, taken + share
        out.append(part)
    return out[::-1]


def _unmix_layers(rgb: Tensor, plate: Tensor, visible: list[Tensor],
                  claims: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Alpha and premultiplied colour of each character layer (far to near), composited back to front with "over"
    over the background layer (``plate`` ``[3,H,W]`` under the characters).

    The layer model of :mod:`cartoonseg.compositing`: the input is the characters' colours ``F_k`` mixed by what
    each adds to the pixel (``visible``: ``m_k``, summing to at most 1) over the plate: ``I = sum m_k F_k + (1 - sum
    m_k) plate``. Painted back to front, layer ``k``'s opacity is its share over what the layers in front leave,
    ``a_k = m_k / (1 - sum of the front m_j)``, so the farther character's edge where a nearer one meets it is
    opaque (it goes on behind the nearer one) and moving frames show it, not the plate, once the nearer one moves
    away. The colours: each layer's colour continued from its interior (``m_k`` near 1; push-pull) is taken out, and
    what remains, ``I - (1 - sum m) plate - sum m_k F_k``, goes back in proportion to ``m_k``
    (:func:`cartoonseg.compositing.unmix_over_plate`, as the puppet renderer's soft edges), so a pixel where one
    layer meets the plate keeps the plain un-mixing ``a F = I - (1 - a) plate`` and a static camera reproduces the
    input (up to clipping to ``[0, a]``). Where the layers in front hide a layer entirely, its alpha is what its
    masks claim (``claims``) and its colour the continued one."""
    estimates = []
    for m in visible:
        valid = m >= 0.98
        weight = valid.to(m.dtype) if bool(valid.any()) else m
        estimates.append(fill_push_pull(rgb[None], weight[None, None])[0])
    premults = unmix_over_plate(rgb, plate, visible, estimates)
    front = torch.zeros_like(visible[0])
    out: list[tuple[Tensor, Tensor]] = []
    for m, colour, claim, premult in zip(visible[::-1], estimates[::-1], claims[::-1], premults[::-1]):
        alpha = over_opacity(m, front, claim)
        # the premultiplied colour over the same share (hidden: what its masks claim, in the continued colour)
        out.append((alpha, torch.minimum(over_opacity(premult, front, claim * colour), alpha.expand(3, -1, -1))))
        front = front + m
    return out[::-1]


def _dof_nearness(disparity: Tensor, far: float, near: float) -> Tensor:
    """The depth of field's nearness scale: ``disparity`` (1 / depth) mapped linearly from ``far`` (the scene's
    farthest, 0) to ``near`` (its nearest, 1), clamped; 0 everywhere when the scene is flat. The focus target and
    every rendered pixel use it, so the subject in focus is sharp."""
    span = near - far
    if not span > 1e-6:
        return torch.zeros_like(disparity)
    return ((disparity - far) / span).clamp(0.0, 1.0)


def _nearest_depth(z: Tensor, core: Tensor) -> Tensor:
    """``z`` on ``core`` (bool ``[H,W]``, not empty) and elsewhere the depth of the nearest ``core`` pixel."""
    from scipy.ndimage import distance_transform_edt

    if bool(core.all()):
        return z
    _, (iy, ix) = distance_transform_edt(~core.cpu().numpy(), return_indices=True)
    iy, ix = torch.from_numpy(iy).to(z.device), torch.from_numpy(ix).to(z.device)
    return z[iy, ix]


def _edge_depth(z: Tensor, inside: Tensor) -> Tensor:
    """``z`` inside the layer, and outside it the depth of the nearest layer pixel within
    :data:`TRANSPARENT_RING` pixels (the transparent ring moves with the layer's edge)."""
    k = 2 * TRANSPARENT_RING + 1
    ring = -F.max_pool2d(-torch.where(inside, z, float("inf"))[None, None], k, stride=1, padding=TRANSPARENT_RING)[0, 0]
    return torch.where(inside, z, ring)


def _depth_groups(soft: Tensor, z: Tensor, extra_depth: Tensor | None, groups: int) -> list[list[int]]:
    """Instances sorted far to near, split into at most ``groups`` contiguous groups."""
    n = soft.shape[0]
    if groups <= 0:
        return []
    if extra_depth is not None:
        # extras["depth"] follows the depth-map convention (larger = nearer): sort by it ascending = far first
        order = torch.argsort(extra_depth.float(), stable=True).tolist()
    else:
        medians = []
        for i in range(n):
            inside = z[soft[i] > 0.5]
            medians.append(float(inside.median()) if inside.numel() else float(z.max()))
        order = sorted(range(n), key=lambda i: -medians[i])
    size = math.ceil(n / min(groups, n))
    return [order[i : i + size] for i in range(0, n, size)]


def _focus_nearness(soft: Tensor, near: Tensor, far: float) -> float:
    """Nearness of the nearest character (max over instances of the median inside the mask), or the 95 % quantile of
    the image without instances, on the scale of the depth of field: 0 at the farthest input pixel (nearness
    ``far``), 1 at the nearest (nearness 1); 0 everywhere for a flat scene (see :func:`_dof_nearness`)."""
    norm = _dof_nearness(near, far, 1.0)
    if soft.shape[0] == 0:
        flat = norm.reshape(-1)
        if flat.numel() > 1 << 22:
            flat = flat[:: flat.numel() // (1 << 22) + 1]
        return float(torch.quantile(flat, 0.95))
    best = 0.0
    for i in range(soft.shape[0]):
        inside = norm[soft[i] > 0.5]
        if inside.numel():
            best = max(best, float(inside.median()))
    return best


# ---------------------------------------------------------------------------------------------- rendering
def coverage_counter(scene: Scene, max_side: int = 192) -> Callable[[Tensor], Tensor]:
    """The automatic path's score: for candidate poses ``[K,6]``, the count of output pixels (at a long side of at
    most ``max_side``) that receive any point of the input view (background layer and characters as seen, no
    filling)."""
    h, w = scene.size
    scale = min(1.0, max_side / max(h, w))
    lh, lw = max(2, round(h * scale)), max(2, round(w * scale))
    near = F.interpolate((1.0 / scene.depth)[None, None], size=(lh, lw), mode="area")[0, 0]
    cloud = unproject(1.0 / near, torch.zeros(0, lh, lw, device=near.device))
    focal_lr = max(lh, lw) / 2.0

    def count(poses: Tensor) -> Tensor:
        out = []
        for chunk in poses.to(near.device).split(32):
            chunk = chunk.clone()
            chunk[:, 4:6] *= scale  # principal offsets are in output pixels
            x, y, zc = project(cloud, chunk, focal_lr, (lh, lw))
            hit = torch.zeros(chunk.shape[0], lh * lw + 1, device=near.device)
            for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
                xi = torch.floor(x).long() + dx
                yi = torch.floor(y).long() + dy
                ok = (zc > 0) & (xi >= 0) & (xi < lw) & (yi >= 0) & (yi < lh)
                idx = torch.where(ok, yi * lw + xi, lh * lw)
                hit.scatter_(1, idx, 1.0)
            out.append(hit[:, :-1].sum(1))
        return torch.cat(out)

    return count


def _auto_frame_batch(scene: Scene, device: torch.device) -> int:
    points = sum(len(layer) for layer in scene.layers)
    budget = 2e8 if device.type == "cuda" else 2.5e7
    per_frame = max(1, points * 4 * (_CHANNELS + 4))
    return int(max(1, min(64, budget // per_frame)))


def _composite(layers: list[SplatResult]) -> tuple[Tensor, Tensor]:
    """Front-to-back "over" compositing in per-pixel depth order (ties: the later layer is in front).

    A layer's transmittance is the product of ``1 - alpha`` of every layer in front of it at that pixel; with the
    few layers used here the pairwise depth comparisons are cheaper than a sort and gather.

    Returns:
        ``[T,C,H,W]`` composited premultiplied features and ``[T,1,H,W]`` composited disparity (1/Z).
    """
    alphas = [layer.features[:, _ALPHA : _ALPHA + 1].clamp(0.0, 1.0) for layer in layers]
    out = torch.zeros_like(layers[0].features)
    disparity = torch.zeros_like(layers[0].depth)
    for i, layer in enumerate(layers):
        trans = torch.ones_like(layer.depth)
        for j, other in enumerate(layers):
            if j == i:
                continue
            in_front = other.depth < layer.depth if j < i else other.depth <= layer.depth
            trans = trans * torch.where(in_front, 1.0 - alphas[j], 1.0)
        out = out + trans * layer.features
        inv = torch.where(torch.isfinite(layer.depth), 1.0 / layer.depth, 0.0)
        disparity = disparity + trans * alphas[i] * inv
    return out, disparity


def render_poses(
    scene: Scene,
    poses: Tensor,
    focal: float,
    *,
    config: KenBurnsConfig = KenBurnsConfig(),
) -> tuple[Tensor, Tensor, Tensor]:
    """Render a batch of camera poses.

    Args:
        scene: the layered scene.
        poses: ``[T,6]`` camera poses (see :mod:`cartoonseg.kenburns.camera`).
        focal: focal length in pixels.
        config: rendering options.

    Returns:
        ``rgb`` ``[T,3,H,W]`` in [0,1], ``disocclusion`` ``[T,1,H,W]`` and ``disparity`` ``[T,1,H,W]`` (1/Z of the
        composited surface).
    """
    size = scene.size
    results = []
    for i, cloud in enumerate(scene.layers):
        layer = splat(cloud, poses, focal, size, z_tolerance=config.z_tolerance)
        if i == 0:
            holes = layer.weight <= 0
            feats = layer.features.clone()
            feats[:, _HOLE : _HOLE + 1] = holes.to(feats.dtype)
            feats[:, _ALPHA : _ALPHA + 1] = 1.0
            feats, depth = fill_holes_far(feats, ~holes, layer.depth, far_tolerance=config.far_tolerance)
            feats[:, _HOLE : _HOLE + 1] = torch.where(holes, 1.0, feats[:, _HOLE : _HOLE + 1])
            # a frame with no point at all stays black; give it a finite depth so compositing is defined
            depth = torch.where(torch.isfinite(depth), depth, torch.full_like(depth, scene.z_far))
            layer = SplatResult(features=feats, weight=layer.weight, depth=depth)
        results.append(layer)
    out, disparity = _composite(results)
    rgb = out[:, _RGB].clamp(0.0, 1.0)
    disocclusion = (out[:, _REVEALED : _REVEALED + 1] + out[:, _HOLE : _HOLE + 1]).clamp(0.0, 1.0)
    return rgb, disocclusion, disparity


def inpaint_scene(
    scene: Scene,
    poses: CameraPoses,
    *,
    config: KenBurnsConfig = KenBurnsConfig(),
    refiner: Refiner | None = None,
    interrupt: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> KeyViewReport | None:
    """The end-view disocclusion inpainting of ``config.fill`` (:func:`inpaint_disocclusions`) for the path ``poses``:
    the scene's background layer gets the lifted points (in place); ``progress(done, total)`` counts the key views.
    Returns what was done, or None for ``far-side`` and ``key_views=0`` (nothing to do)."""
    if config.fill == "far-side" or config.key_views == 0:
        return None
    reveal = scene.plate is not None and len(scene.layers) > 1 and config.character_reveals == "key-views"
    # with the characters' reveals inpainted too, key views are picked on the scene as seen (characters included),
    # whose holes are those reveals and the depth edges
    scene.layers[0], report = inpaint_disocclusions(
        scene.layers[0], scene.depth if reveal else scene.background_depth, scene.size, poses,
        characters=scene.layers[1:] if reveal else (), plate=scene.plate if reveal else None,
        refiner=refiner if config.fill == "diffusion" else None, key_views=config.key_views,
        overshoot=config.key_view_overshoot, near_band=None if config.near_band < 0 else config.near_band,
        z_tolerance=config.z_tolerance, far_tolerance=config.far_tolerance, plane_guidance=config.plane_guidance,
        interrupt=interrupt, progress=progress,
    )
    return report


def render_kenburns(
    image: Tensor,
    depth: Tensor,
    *,
    masks=None,
    background: Tensor | None = None,
    camera: CameraPath = CameraPath(),
    config: KenBurnsConfig = KenBurnsConfig(),
    device: torch.device | str | None = None,
    callback: Callable[[int, int], None] | None = None,
    refiner: Refiner | None = None,
    interrupt: Callable[[], None] | None = None,
    key_view_progress: Callable[[int, int], None] | None = None,
) -> KenBurnsResult:
    """Render an instance-aware 3D Ken Burns clip from one image.

    Deterministic: the same inputs give bitwise equal frames with the same thread count, CPU and PyTorch build
    (every PatchMatch and the plane fit use fixed seeds). Another thread count may round differently
    (the plane fit's least squares), and PatchMatch then follows other fields (0.05 dB on the uncovered pixels
    of one benchmark scene between 1 and 2 threads).

    Args:
        image: ``[H,W,3]`` RGB in [0,1] (uint8 0..255 is scaled).
        depth: ``[H,W]`` or ``[H,W,C]`` nearness (larger = nearer, e.g. a ComfyUI depth IMAGE frame).
        masks: character instances (:class:`cartoonseg.Instances`, with alpha mattes if it carries ``alphas``, or
            soft masks ``[N,H,W]``, of the image's size), or ``None``.
        background: ``[H,W,3]`` inpainted background plate (float in [0,1] or uint8; any size of the image's aspect
            ratio), or ``None`` (a smooth fill is used).
        camera: the camera motion (default: the original's automatic path, 75 frames, ping-pong, 25 fps).
        config: rendering options.
        device: where to render (default: the image's device); results are returned on that device.
        callback: called as ``callback(done, total)`` after every frame batch (progress / cancellation: raise to
            stop).
        refiner: the diffusion pass of ``config.fill="diffusion"`` (required there; see
            :data:`~cartoonseg.kenburns.disocclusion.Refiner`, e.g. :func:`cartoonseg.kenburns.diffusers_refiner`
            or the ComfyUI node's sampler): it repaints the PatchMatch fill of each key view's holes (and of a
            missing plate). Ignored by the other fills.
        interrupt: cancel check called between inpainting steps (raise to stop).
        key_view_progress: called as ``key_view_progress(done, total)`` over the key views inpainted before the
            frames (``fill`` patchmatch or diffusion: seconds to minutes each), for a progress bar.

    Returns:
        :class:`KenBurnsResult` with ``camera.total_frames`` frames.
    """
    if not isinstance(camera, CameraPath):
        raise TypeError(f"camera must be a CameraPath, got {type(camera).__name__}")
    if not isinstance(config, KenBurnsConfig):
        raise TypeError(f"config must be a KenBurnsConfig, got {type(config).__name__}")
    if config.fill == "diffusion" and refiner is None:
        raise ValueError(
            "fill='diffusion' needs a diffusion model: pass render_kenburns(..., refiner=...) (e.g. "
            "cartoonseg.kenburns.diffusers_refiner(pipe, tags=...)); use fill='patchmatch' without a model"
        )
    _check_clip_budget(image, camera, config)
    inpaint = config.fill != "far-side"
    refiner = refiner if config.fill == "diffusion" else None
    with torch.no_grad():
        scene = build_scene(image, depth, masks, background, config=config, device=device, plate_fill=inpaint,
                            refiner=refiner, interrupt=interrupt)
        dev = scene.depth.device
        poses = resolve_poses(camera, scene.depth, coverage_fn=coverage_counter(scene) if camera.preset == "auto" else None)
        report = inpaint_scene(scene, poses, config=config, refiner=refiner, interrupt=interrupt,
                               progress=key_view_progress)
        h, w = scene.size
        unique = poses.poses.shape[0]
        batch = config.frame_batch or _auto_frame_batch(scene, dev)
        total_out = len(poses)
        frames = torch.empty(total_out, h, w, 3, device=dev)
        disocc = torch.empty(total_out, h, w, device=dev)
        slots = [torch.nonzero(poses.order == i).squeeze(1).to(dev) for i in range(unique)]
        inv_near, inv_far = 1.0 / scene.z_near, 1.0 / scene.z_far
        racks = config.depth_of_field and inv_near - inv_far > 1e-6  # a flat scene has no depth to focus through
        focus = focus_schedule(poses.times, scene.focus_nearness, config.dof_speed) if racks else None
        for start in range(0, unique, batch):
            stop = min(unique, start + batch)
            rgb, hole, disparity = render_poses(scene, poses.poses[start:stop].to(dev), poses.focal, config=config)
            if focus is not None:
                nearness = _dof_nearness(disparity, inv_far, inv_near)
                rgb = bokeh_blur(
                    rgb, nearness, focus[start:stop].to(dev), strength=config.dof_strength, gamma=config.dof_gamma
                )
            rgb_hwc = rgb.permute(0, 2, 3, 1)
            for j in range(stop - start):
                frames[slots[start + j]] = rgb_hwc[j]
                disocc[slots[start + j]] = hole[j, 0]
            if callback is not None:
                callback(stop, unique)
    return KenBurnsResult(frames=frames, disocclusion=disocc, fps=poses.fps, poses=poses, key_views=report)
