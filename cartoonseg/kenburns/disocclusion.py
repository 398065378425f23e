"""End-view disocclusion inpainting for the 3D Ken Burns effect: what the camera path uncovers is inpainted once, in
the views that uncover the most, and the new pixels become points of the scene behind their occluders.

This is the layered inpainting of the 3D Ken Burns effect (Niklaus et al. 2019, §3.3) as CartoonSegmentation
(arXiv 2312.01943, §6.1) runs it: render the extreme views of the camera path (the translation overshot by 10 %),
find the holes, inpaint colour and depth there, append the inpainted pixels to the point cloud, then render every
frame from the completed cloud. Intermediate frames then show the same inpainted texture, moving with the scene,
instead of a per-frame smear. Written from the papers' descriptions; no code of the original is used.

Steps of :func:`inpaint_disocclusions` (characters stay separate layers; they are never inpainted, only occlude):

1. **Key views.** Candidate poses are the path's own (at most :data:`MAX_CANDIDATES`, both ends included). A cheap
   proxy (the background layer re-projected at a long side of :data:`PROXY_SIDE` px) counts the uncovered pixels of
   every candidate; the worst one becomes a key view, its holes are lifted into the proxy, and the count is repeated
   until every candidate is covered to within ``min_hole_fraction`` or ``key_views`` views were taken (the first
   one is always taken on a moving path, and so is each end of the path that uncovers something on its own, as the
   original always inpaints its extremes). A straight
   path needs its end (and, if the start also uncovers something, its start); a path that turns (``orbit``) takes
   more. Each key view is rendered at its pose overshot by ``overshoot`` (translation, focal and principal offsets
   scaled away from the input view), so the holes of the frames near it are covered too.
2. **Holes.** The background layer (input outside the characters, the plate behind them, and the points added by
   earlier key views) is splatted in the key view; pixels that receive no point are the holes: disocclusions at
   every depth edge of the scene, around characters where the plate does not reach, and off-image reveals.
3. **Depth** of each hole pixel: the background-side fill of :func:`~cartoonseg.kenburns.fill.fill_holes_far`
   (``side="behind"``: the nearest known pixel in 8 directions, keeping only candidates clearly behind the nearest
   one, i.e. behind the occluder that opened the hole), so a hole takes the depth of the surfaces behind the
   occluder, never the occluder's, and a hole in front of both a ground plane and a wall takes each from its side.
4. **Colour** by depth-aware PatchMatch (:func:`fill_view`), one window per group of nearby holes: copy sources are
   the window's known pixels whose depth lies in the holes' background depth range, and the occluder's rim next to
   the holes is masked, so the occluder is neither copied into the hole nor steers the patches at its boundary.
   With ``fill="diffusion"`` a diffusion pass (:data:`Refiner`: the instance/background tags as prompt, the paper's
   negative prompt) then repaints the holes, dilated by 5 px, starting from that fill. Only hole pixels are kept.
5. **Reveals behind the characters** (``plate`` given, :data:`CHARACTER_REVEALS` ``key-views``): the background
   layer is splatted again without its plate points, with the characters of the view in front of it; the pixels
   that then show nothing (or only points behind the plate's) are what the view reveals behind the characters.
   They are inpainted as in steps 3-4 (with :data:`REVEAL_PATCH` px patches), the characters being the occluder
   (their rim masked, never a copy source) and the holes of steps 3-4 known, with the group's holes split into depth
   bands (:func:`fill_view` ``split_depth``) so the strip a character reveals next to a far wall and on the ground in
   front of it each copy from their own surface, and each band copying only from within ``margin`` px of itself
   (``reach``), not from another character's surroundings in the group. This is what the original does at its
   extremes (holes and instances inpainted together, only the holes kept); a thin reveal next to known background
   inpaints better than the whole character area of the input view (the plate, which now shows only
   where no key view reaches). The plate points landing on the reveals are dropped.
   **Planes** (``plane_guidance``): the slanted planes of the input view (a ground, a floor) are found once
   (:mod:`~cartoonseg.kenburns.planes`); the holes of steps 3-5 that lie on one are then inpainted in the plane's
   rectified coordinates, where its pattern is free of perspective, from what the input shows of it (never the
   plate or an earlier key view's inpainting), and take the plane's exact depth. A depth edge's hole lies on the
   plane where the plane passes in front of its background side and is seen nearby; a reveal behind a character
   (wide, it may hide anything) only where its row shows the plane on both sides of the character and nothing in
   front of the plane (a house there may continue behind the character). A group of holes (or band of reveals) that
   lies all on a plane skips the image-space fill, whose colours the plane's would replace.
6. **Lifting.** Each hole pixel is unprojected with the key view's camera at its filled depth and appended to the
   background layer, flagged as disoccluded ("revealed") for the output mask.

Remaining holes of the final frames (thin slivers between key views) still get the per-frame far-side fill.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import grow_mask
from .camera import CameraPoses
from .fill import fill_holes_far, hole_groups, patchmatch_config
from .planes import fit_planes, plane_fill
from .pointcloud import PointCloud, lift, project, splat, unproject

__all__ = [
    "CHARACTER_REVEALS",
    "FILLS",
    "KeyViewReport",
    "BackendRefiner",
    "Refiner",
    "diffusers_refiner",
    "fill_view",
    "inpaint_disocclusions",
    "inpaint_plate",
    "lift",
    "make_refiner",
    "overshoot_poses",
    "select_key_views",
]

#: How disocclusions are filled: ``far-side`` (per frame, from the farther side of each hole; no inpainting),
#: ``patchmatch`` (end-view inpainting with PatchMatch, patch :data:`END_VIEW_PATCH`, :data:`REVEAL_PATCH` behind the
#: characters, the default), ``diffusion`` (end-view inpainting with a diffusion model; needs an inpainter built around
#: one, see :func:`make_inpainter`).
FILLS: tuple[str, ...] = ("far-side", "patchmatch", "diffusion")

#: What the end-view inpainting does where the camera reveals background that the characters hid: ``key-views``
#: (inpainted in the key views with the characters as occluders, the default) or ``plate`` (the background plate
#: is shown as given).
CHARACTER_REVEALS: tuple[str, ...] = ("key-views", "plate")

#: A refiner (the diffusion pass of ``fill="diffusion"``): ``(image [H,W,3] float RGB in [0,1], mask [H,W] bool,
#: True = repaint, init [H,W,3] = image with the mask already filled by PatchMatch) -> [H,W,3] float in [0,1]``.
#: Only masked pixels of the result are used.
Refiner = Callable[[Tensor, Tensor, Tensor], Tensor]

# Long side of the proxy used to pick key views.
PROXY_SIDE = 192
# Candidate poses examined when picking key views (evenly spaced along the path, ends included).
MAX_CANDIDATES = 24
# PatchMatch patch side for the key views' holes at the background's depth edges.
END_VIEW_PATCH = 5
# PatchMatch patch side for what the key views reveal behind the characters: a wider strip than a depth edge's, next to
# the surfaces the character hid, whose pattern (a house's boards, a wall's bricks) a larger patch carries across
# (bench/bench_kenburns_quality.py: +0.4 dB on all uncovered pixels; 7-px patches lose at the depth edges, 9-px ones
# lose everywhere).
REVEAL_PATCH = 7
# Pixels by which the holes grow for the diffusion pass (the original dilates its mask by a 5 px ellipse).
REFINE_DILATION = 5
# Channels of the background layer's point features (see render.py): premultiplied RGB, alpha, revealed, hole.
_REVEALED = 4


@dataclasses.dataclass
class KeyViewReport:
    """What :func:`inpaint_disocclusions` did.

    Attributes:
        poses: ``[K,6]`` the (overshot) poses of the key views, in the order they were inpainted.
        times: clip time in [0,1] of the path pose each key view came from.
        hole_pixels: pixels inpainted and lifted per key view.
    """

    poses: Tensor
    times: list[float]
    hole_pixels: list[int]


def overshoot_poses(poses: Tensor, factor: float, z_near: float | None = None) -> Tensor:
    """Poses ``[T,6]`` moved ``factor`` times as far from the input view (identity pose ``(0,0,0,1,0,0)``): the
    translation, ``k - 1`` and the principal offsets are scaled (the original renders its extremes with the shift
    times 1.1). With ``z_near`` (the nearest scene depth) a forward move goes at most half of the remaining way to
    the nearest points, so the overshoot never puts the camera into the scene."""
    out = poses.clone()
    out[:, 0:3] = poses[:, 0:3] * factor
    out[:, 3] = 1.0 + (poses[:, 3] - 1.0) * factor
    out[:, 4:6] = poses[:, 4:6] * factor
    if z_near is not None:
        tz = poses[:, 2]
        cap = torch.where(tz > 0, tz + 0.5 * (z_near - tz).clamp_min(0.0), out[:, 2])
        out[:, 2] = torch.minimum(out[:, 2], cap)
    return out


def _concat(a: PointCloud, b: PointCloud) -> PointCloud:
    return PointCloud(
        ax=torch.cat([a.ax, b.ax]), ay=torch.cat([a.ay, b.ay]), z=torch.cat([a.z, b.z]),
        features=torch.cat([a.features, b.features.to(a.features)]),
    )


def _far_side(rgb: Tensor, depth: Tensor, holes: Tensor, far_tolerance: float) -> tuple[Tensor, Tensor]:
    """The far-side colours ``[H,W,3]`` and depth ``[H,W]`` (background side, :func:`fill_holes_far`
    ``side="behind"``) of the ``holes`` of one view; ``rgb`` is ``[3,H,W]``."""
    far_rgb, fdepth = fill_holes_far(rgb[None], ~holes[None, None], depth[None, None], far_tolerance=far_tolerance,
                                     side="behind")
    return far_rgb[0].clamp(0.0, 1.0).permute(1, 2, 0), fdepth[0, 0]


def _fill_view_holes(
    rgb: Tensor, depth: Tensor, holes: Tensor, *, far_tolerance: float, far: tuple[Tensor, Tensor] | None = None,
    **fill
) -> tuple[Tensor, Tensor]:
    """Depth (background side, :func:`_far_side`) and colour (:func:`fill_view`, the far-side colours where no
    window fills) of the ``holes`` of one view. ``rgb`` is ``[3,H,W]``; ``far``: :func:`_far_side`'s result if the
    caller has it; returns ``[H,W,3]`` colours and ``[H,W]`` depth."""
    far_rgb, fdepth = _far_side(rgb, depth, holes, far_tolerance) if far is None else far
    known_depth = torch.where(holes, torch.zeros_like(fdepth), depth)
    filled = fill_view(rgb.permute(1, 2, 0), holes, known_depth, fdepth, far_tolerance=far_tolerance,
                       fallback=far_rgb, **fill)
    return filled, fdepth


def _select(cloud: PointCloud, keep: Tensor) -> PointCloud:
    return PointCloud(ax=cloud.ax[keep], ay=cloud.ay[keep], z=cloud.z[keep], features=cloud.features[keep])


def _character_view(characters, pose: Tensor, focal: float, size: tuple[int, int], z_tolerance: float):
    """The character layers seen from ``pose``: where they cover the view (alpha > 0.5), the front one's colour
    ``[3,H,W]`` and depth ``[H,W]`` (inf where none covers)."""
    h, w = size
    cover = torch.zeros(h, w, dtype=torch.bool, device=pose.device)
    rgb = torch.zeros(3, h, w, device=pose.device)
    depth = torch.full((h, w), float("inf"), device=pose.device)
    for cloud in characters:
        layer = splat(cloud, pose, focal, size, z_tolerance=z_tolerance)
        alpha = layer.features[0, 3]
        front = (alpha > 0.5) & (layer.depth[0, 0] < depth)
        rgb = torch.where(front[None], (layer.features[0, 0:3] / alpha.clamp_min(1e-6)).clamp(0.0, 1.0), rgb)
        depth = torch.where(front, layer.depth[0, 0], depth)
        cover |= alpha > 0.5
    return cover, rgb, depth


def _lands_in(cloud: PointCloud, pose: Tensor, focal: float, size: tuple[int, int], region: Tensor) -> Tensor:
    """Per point: whether it projects (nearest pixel) into ``region`` (bool ``[H,W]``) of the view ``pose``
    (``[1,6]``)."""
    h, w = size
    x, y, z = project(cloud, pose, focal, size)
    xi, yi = torch.round(x[0]).long(), torch.round(y[0]).long()
    ok = (z[0] > 0) & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    flat = region.reshape(-1)
    return ok & flat[(yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1))]


# ---------------------------------------------------------------------------------------------- key views
def _proxy_cloud(background_depth: Tensor, size: tuple[int, int]) -> tuple[PointCloud, float, tuple[int, int]]:
    h, w = size
    scale = min(1.0, PROXY_SIDE / max(h, w))
    lh, lw = max(2, round(h * scale)), max(2, round(w * scale))
    # area-average nearness (1/Z), so depth edges stay edges instead of smearing into ramps
    near = F.interpolate((1.0 / background_depth)[None, None], size=(lh, lw), mode="area")[0, 0]
    cloud = unproject(1.0 / near, torch.zeros(0, lh, lw, device=near.device, dtype=near.dtype))
    return cloud, scale, (lh, lw)


def _scaled(poses: Tensor, scale: float) -> Tensor:
    out = poses.clone()
    out[:, 4:6] = out[:, 4:6] * scale  # principal offsets are in output pixels
    return out


def select_key_views(
    background_depth: Tensor,
    poses: CameraPoses,
    *,
    max_views: int = 4,
    min_hole_fraction: float = 5e-4,
) -> list[int]:
    """Pick the path poses whose holes, once inpainted and lifted, cover the holes of every frame (greedy, on a
    low-resolution proxy of the background layer).

    Args:
        background_depth: ``[H,W]`` scene depth of the background layer (input view).
        poses: the path.
        max_views: at most this many key views.
        min_hole_fraction: stop when no candidate has more uncovered pixels than this fraction of the frame (after
            the first view, which a moving path always gets).

    Returns:
        Indices into ``poses.poses``, in the order to inpaint them (worst first).
    """
    n = poses.poses.shape[0]
    if max_views <= 0 or n == 0:
        return []
    h, w = background_depth.shape
    cloud, scale, lsize = _proxy_cloud(background_depth, (h, w))
    focal = poses.focal * scale
    count = min(n, MAX_CANDIDATES)
    cand = sorted({round(i * (n - 1) / max(1, count - 1)) for i in range(count)})
    cand_poses = _scaled(poses.poses[cand].to(cloud.z), scale)
    chosen: list[int] = []
    limit = max(1.0, min_hole_fraction * lsize[0] * lsize[1])
    # ties go to the pose farthest from the input view (its overshot holes cover those of the poses before it)
    motion = cand_poses[:, 0:3].norm(dim=1) + (cand_poses[:, 3] - 1.0).abs() + cand_poses[:, 4:6].norm(dim=1) / focal
    tie_break = 0.5 * torch.argsort(torch.argsort(motion)).float() / max(1, len(cand))
    initial = None
    for _ in range(max_views):
        layer = splat(cloud, cand_poses, focal, lsize)
        holes = (layer.weight <= 0)[:, 0]
        counts = holes.flatten(1).sum(1).float()
        if initial is None:
            initial = counts
        score = counts + tie_break
        for j in range(len(cand)):
            if cand[j] in chosen:
                score[j] = -1.0
        best = int(torch.argmax(score))
        if not chosen and float(counts[best]) == 0.0 and float(motion.max()) > 0.0:
            # the proxy sees no hole, but thin ones (a pixel or two at depth edges) vanish at its resolution: the
            # original always inpaints the extremes of its path, so the farthest pose is still taken
            best = int(torch.argmax(motion))
        elif float(counts[best]) <= (0.0 if not chosen else limit):
            break
        chosen.append(cand[best])
        # lift the proxy's holes of that view at their far-side depth
        hole = holes[best : best + 1, None]
        _, depth = fill_holes_far(torch.zeros(1, 0, *lsize, dtype=cloud.z.dtype, device=cloud.z.device), ~hole,
                                  layer.depth[best : best + 1])
        pix = hole.reshape(-1).nonzero().squeeze(1)
        zc = depth.reshape(-1)[pix]
        ok = torch.isfinite(zc) & (zc > 0)
        if not bool(ok.any()):
            continue
        new = lift(cand_poses[best], focal, lsize, pix[ok], zc[ok], torch.zeros(int(ok.sum()), 0).to(cloud.z))
        cloud = _concat(cloud, new)
    # both ends of the path that uncover something on their own are key views, as the original inpaints both
    # extremes: the proxy lifts a view's holes at the far side's depth, where they cover the other end's holes from
    # everywhere, but what those hide may be nearer (a house edge behind a character, whose hidden part the plate
    # shows at a guessed depth until a key view replaces it), so that end showed the plate
    if initial is not None:
        for end in (0, len(cand) - 1):
            if len(chosen) < max_views and cand[end] not in chosen and float(initial[end]) > limit:
                chosen.append(cand[end])
    return chosen


# ---------------------------------------------------------------------------------------------- inpainting
def fill_view(
    rgb: Tensor,
    holes: Tensor,
    depth: Tensor,
    fill_depth: Tensor,
    *,
    patch_size: int = 3,
    seed: int = 0,
    near_band: int = 3,
    margin: int = 16,
    far_tolerance: float = 0.1,
    fallback: Tensor | None = None,
    split_depth: bool = False,
    reach: int | None = None,
    occluder: Tensor | None = None,
    skip: Tensor | None = None,
    interrupt: Callable[[], None] | None = None,
) -> Tensor:
    """Depth-aware PatchMatch of the holes of one rendered view, one window per group of nearby holes.

    Each group's window is its holes grown by ``margin`` px. Copy sources are the known pixels of the window whose
    depth lies in the group's far-side depth range (``fill_depth`` of its holes, widened by ``far_tolerance``):
    the surface the hole belongs to, never the occluder in front of it or an unrelated surface further back. Known
    pixels within ``near_band`` px of the holes that are nearer than that range (the occluder's rim) are masked
    too, so they do not steer the patches at the hole boundary.

    Args:
        rgb: ``[H,W,3]`` rendered colours in [0,1] (anything in the holes).
        holes: ``[H,W]`` bool, pixels to fill.
        depth: ``[H,W]`` depth of the rendered pixels (ignored in the holes).
        fill_depth: ``[H,W]`` far-side depth of the hole pixels.
        patch_size, seed: PatchMatch parameters (the paper: patch 3).
        near_band: width of the masked occluder rim.
        margin: context around each group of holes.
        far_tolerance: relative widening of the depth range.
        fallback: ``[H,W,3]`` colours for holes no window can fill (no source patch); default: left as ``rgb``.
        split_depth: split each group's holes into bands where their sorted fill depths jump by more than
            ``far_tolerance`` and fill each band from its own depth range (one PatchMatch per band).
        reach: copy sources only within this many px of the band's holes (None: the whole window). A group's
            window spans all its holes: without a reach, the strip a character reveals on a house copied a fence
            at the house's depth beside another character of the group (a green blob on a brown house).
        occluder: ``[H,W]`` bool, known pixels of the occluders (the characters in front of the reveals): never a
            copy source and masked like the rim within ``near_band`` px of the holes, whatever their depth. The
            depth test alone let them in: a character stands on the ground, so a band that reaches down to its
            feet spans its depth, and its body was copied into the reveals beside it (an orange wedge on the
            ground beside a head, scene 0 of ``bench/bench_kenburns_quality.py``).
        skip: ``[H,W]`` bool, hole pixels whose colour the caller replaces (the holes :func:`plane_fill` fills): a
            band lying entirely in it is not inpainted (it keeps the fallback). Every band is inpainted on its own
            from ``rgb``, so this changes no other pixel; a band with any pixel outside ``skip`` runs as before (its
            pixels on the plane shape its other pixels' fill through the shared patches).
        interrupt: cancel check before each window (band).

    Returns:
        ``[H,W,3]``: ``rgb`` with the holes filled.
    """
    from ..inpaint import patchmatch_inpaint

    config = patchmatch_config(patch_size)
    out = rgb.clone()
    if fallback is not None:
        out[holes] = fallback[holes].to(out)
    for group, (y0, y1, x0, x1) in hole_groups(holes, margin):
        win = (slice(y0, y1), slice(x0, x1))
        for band, (lo, hi) in _depth_bands(group, fill_depth, far_tolerance, split_depth):
            if skip is not None and not bool((band & ~skip).any()):
                continue  # every pixel of the band is replaced by the caller
            if interrupt is not None:
                interrupt()
            w_holes, w_depth = holes[win], depth[win]
            known = ~w_holes
            source = known & (w_depth >= lo) & (w_depth <= hi)
            near_side = w_depth < lo
            if occluder is not None:
                # by what it is, not by its depth: a character's feet stand on the ground they occlude
                source = source & ~occluder[win]
                near_side = near_side | occluder[win]
            if reach is not None:
                source = source & grow_mask(band[win], reach)  # the band lies inside its window
            rim = known & near_side & grow_mask(band[win], near_band)
            mask = w_holes | rim
            try:
                filled = patchmatch_inpaint(rgb[win].float().cpu(), mask.cpu(), source=source.cpu(),
                                            patch_size=patch_size, seed=seed, config=config, interrupt=interrupt)
            except ValueError:
                continue  # no complete source patch in the window: keep the fallback
            sel = band[win]
            out[win][sel] = filled.to(out)[sel.cpu()]
    return out


def _depth_bands(
    group: Tensor, fill_depth: Tensor, tolerance: float, split: bool
) -> list[tuple[Tensor, tuple[float, float]]]:
    """The hole pixels of ``group`` split where their sorted fill depths jump by more than ``tolerance``
    (relative): a hole next to a far wall and one on the ground in front of it copy each from its own surface.
    Returns ``(pixels, (lo, hi))`` per band, the depth range widened by ``tolerance``."""
    far = fill_depth[group]
    ok = torch.isfinite(far) & (far > 0)
    if not bool(ok.any()):
        return []
    values = torch.sort(far[ok]).values
    jumps = torch.nonzero(values[1:] > values[:-1] * (1.0 + tolerance)).squeeze(1) if split else values[:0].long()
    edges = [0, *(int(j) + 1 for j in jumps), values.numel()]
    bands = []
    for a, b in zip(edges[:-1], edges[1:]):
        lo, hi = float(values[a]), float(values[b - 1])
        pixels = group & (fill_depth >= lo) & (fill_depth <= hi)
        bands.append((pixels, (lo * (1.0 - tolerance), hi * (1.0 + tolerance))))
    return bands


def inpaint_plate(
    rgb: Tensor,
    region: Tensor,
    *,
    refiner: Refiner | None = None,
    patch_size: int = 3,
    seed: int = 0,
    interrupt: Callable[[], None] | None = None,
) -> Tensor:
    """A background plate: ``region`` (bool ``[H,W]``, the characters' support) of ``rgb`` (``[H,W,3]``) filled by
    PatchMatch, then refined by ``refiner`` if given. Outside ``region`` the plate equals ``rgb``."""
    from ..inpaint import patchmatch_inpaint

    plate = patchmatch_inpaint(rgb.float().cpu(), region.cpu(), patch_size=patch_size, seed=seed,
                               config=patchmatch_config(patch_size), interrupt=interrupt).to(rgb)
    if refiner is not None:
        plate = _refine(refiner, rgb, region, plate)
    return plate


class BackendRefiner:
    """The diffusion pass of ``fill="diffusion"`` over any sampler backend of :mod:`cartoonseg.inpaint` (the paper's
    Ken Burns refinement: :func:`~cartoonseg.inpaint.refine_background` from the PatchMatch fill, with the background
    tags as prompt and the paper's negative prompt). Build it with :func:`make_refiner` or
    :func:`diffusers_refiner`; it is a :data:`Refiner`.

    Attributes:
        backend: the :data:`~cartoonseg.inpaint.RefineBackend` (``diffusers`` or ComfyUI sampling).
        prompt: the positive prompt (``"<tags>, high quality, masterpiece, no_humans"``).
        negative_prompt: the negative prompt.
        settings: the :class:`~cartoonseg.inpaint.RefineSettings`.
    """

    def __init__(self, backend, prompt: str, negative_prompt: str, settings, interrupt=None) -> None:
        self.backend, self.prompt, self.negative_prompt, self.settings = backend, prompt, negative_prompt, settings
        self.interrupt = interrupt

    def __call__(self, image: Tensor, mask: Tensor, init: Tensor) -> Tensor:
        from ..inpaint import refine_background

        out, _ = refine_background(image.float().cpu(), mask.float().cpu(), self.backend, prompt=self.prompt,
                                   negative_prompt=self.negative_prompt, settings=self.settings,
                                   init=init.float().cpu(), interrupt=self.interrupt)
        return out.to(image)


def make_refiner(
    backend,
    *,
    tags=None,
    negative_prompt: str | None = None,
    settings=None,
    interrupt: Callable[[], None] | None = None,
) -> BackendRefiner:
    """A :data:`Refiner` over a sampler backend (:data:`cartoonseg.inpaint.RefineBackend`).

    Args:
        backend: e.g. :class:`cartoonseg.inpaint.diffusers_backend.DiffusersInpaintBackend`, or the ComfyUI
            node's ``ComfyInpaintBackend``.
        tags: background tags for the prompt (a string, ``{tag: prob}`` or a list; character tags are dropped), e.g.
            the background tags of :func:`cartoonseg.tagger.tag_instances`.
        negative_prompt: default the paper's (against people, so no character is painted into a hole).
        settings: :class:`~cartoonseg.inpaint.RefineSettings` (default: the original's 32 steps, cfg 7, denoise
            0.75, seed 0, short side 1024).
        interrupt: cancel check before each sampling.
    """
    from ..inpaint import NEGATIVE_PROMPT, RefineSettings, background_prompt

    return BackendRefiner(backend, background_prompt(tags), NEGATIVE_PROMPT if negative_prompt is None else negative_prompt,
                          settings or RefineSettings(), interrupt)


def diffusers_refiner(pipe, *, tags=None, negative_prompt: str | None = None, settings=None,
                      progress: Callable[[int, int], None] | None = None) -> BackendRefiner:
    """:func:`make_refiner` over a ``diffusers`` inpainting pipeline (from
    :func:`cartoonseg.inpaint.diffusers_backend.load_inpaint_pipeline`); ``progress(step, total)`` per step."""
    from ..inpaint.diffusers_backend import DiffusersInpaintBackend

    return make_refiner(DiffusersInpaintBackend(pipe, progress=progress), tags=tags, negative_prompt=negative_prompt,
                        settings=settings)


def _refine(refiner: Refiner, image: Tensor, mask: Tensor, init: Tensor) -> Tensor:
    out = refiner(image, mask, init)
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(image.shape):
        raise RuntimeError(f"the refiner returned {getattr(out, 'shape', type(out).__name__)}, expected "
                           f"{tuple(image.shape)}")
    return torch.where(mask[..., None], out.to(image).clamp(0.0, 1.0), init)


def inpaint_disocclusions(
    background: PointCloud,
    background_depth: Tensor,
    size: tuple[int, int],
    poses: CameraPoses,
    *,
    characters: list[PointCloud] | tuple[PointCloud, ...] = (),
    plate: Tensor | None = None,
    refiner: Refiner | None = None,
    key_views: int = 4,
    overshoot: float = 1.1,
    min_hole_fraction: float = 5e-4,
    near_band: int | None = None,
    margin: int | None = None,
    patch_size: int = END_VIEW_PATCH,
    reveal_patch_size: int = REVEAL_PATCH,
    seed: int = 0,
    z_tolerance: float = 0.03,
    far_tolerance: float = 0.1,
    plane_guidance: bool = True,
    interrupt: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[PointCloud, KeyViewReport]:
    """Inpaint the disocclusions of a camera path into the background layer (see the module docstring).

    Args:
        background: the background layer's points (features: premultiplied RGB, alpha, revealed, hole).
        background_depth: ``[H,W]`` the depth the key views are picked on (:func:`select_key_views`): the background
            layer's in the input view, or the scene's as seen (characters included) when their reveals are
            inpainted too.
        size: ``(H, W)`` of the frames.
        poses: the camera path.
        characters: the character layers (features as ``background``), the occluders of their reveals.
        plate: ``[N]`` bool per point of ``background``: the plate points. Given, what the key views reveal behind
            the ``characters`` is inpainted (step 5); None shows the plate there.
        refiner: optional diffusion pass over each key view's holes after PatchMatch (``fill="diffusion"``).
        key_views: at most this many key views (0 disables the inpainting).
        overshoot: each key view's pose is moved this many times as far from the input view.
        min_hole_fraction: holes smaller than this fraction of the frame do not call for another key view.
        near_band: width in pixels of the occluder rim masked around holes (default: 0.5 % of the long side, at
            least 2).
        margin: context in pixels around each group of holes (default: 1/8 of the long side, at least 16).
        patch_size, seed: PatchMatch parameters at the depth edges (5 px patches carry the structure of cartoon
            textures across a disocclusion better than the 3 px of the original's character plate: see
            ``bench/bench_kenburns_quality.py``).
        reveal_patch_size: PatchMatch patch side for the reveals behind the characters (step 5).
        plane_guidance: find the input view's slanted planes (a ground, :func:`~cartoonseg.kenburns.planes.
            fit_planes`) and inpaint the holes and reveals on them in the plane's own coordinates, at the plane's
            depth (:func:`~cartoonseg.kenburns.planes.plane_fill`); the others as before.
        z_tolerance: z-buffer blending band (as the renderer).
        far_tolerance: relative depth band of the far side (as the renderer).
        interrupt: cancel check (raise to stop), called between inpainting windows.
        progress: ``progress(done, total)`` over the key views picked (``progress(0, total)`` first, then after
            each view), for progress bars: a view takes seconds (PatchMatch) to minutes (diffusion).

    Returns:
        ``(background, report)``: the layer with the lifted points appended, and what was done.
    """
    h, w = size
    if near_band is None:
        near_band = max(2, round(0.005 * max(h, w)))
    if margin is None:
        margin = max(16, round(0.125 * max(h, w)))
    order = select_key_views(background_depth, poses, max_views=key_views, min_hole_fraction=min_hole_fraction)
    report = KeyViewReport(poses=torch.zeros(0, 6), times=[], hole_pixels=[])
    z_near = float(background.z.min()) if len(background) else None
    # slanted planes (a ground) of the input view, without the plate's guessed points: their holes are inpainted in
    # the plane's own coordinates (planes.py)
    planes = fit_planes(background, poses.focal, keep=None if plate is None else ~plate, seed=seed) \
        if plane_guidance and len(background) else []
    key_poses = []
    if progress is not None:
        progress(0, len(order))
    for done, index in enumerate(order, 1):
        if interrupt is not None:
            interrupt()
        if progress is not None and done > 1:
            progress(done - 1, len(order))
        pose = overshoot_poses(poses.poses[index : index + 1].to(background.z), overshoot, z_near)
        fill = dict(patch_size=patch_size, seed=seed, near_band=near_band, margin=margin, far_tolerance=far_tolerance,
                    interrupt=interrupt)
        # 1. the holes of the background layer as it is (depth edges, off-image reveals)
        layer = splat(background, pose, poses.focal, size, z_tolerance=z_tolerance)
        holes = (layer.weight <= 0)[0, 0]
        if bool(holes.all()):
            continue
        feats = layer.features[0, 0:3].clamp(0.0, 1.0)  # the background is opaque: colours are not premultiplied
        view_depth = layer.depth[0, 0]
        if planes:
            # the planes copy only what the input shows: not the plate, not what an earlier key view inpainted
            real = background.features[:, _REVEALED] < 0.5
            if plate is not None:
                real = real & ~plate
            shown = splat(_select(background, real), pose, poses.focal, size, z_tolerance=z_tolerance)
            guessed = (shown.weight <= 0)[0, 0] | (shown.depth[0, 0] > view_depth * (1.0 + z_tolerance))
        if bool(holes.any()):
            far = _far_side(feats, view_depth, holes, far_tolerance)
            on = None
            if planes:
                p_rgb, p_depth, on = plane_fill(feats.permute(1, 2, 0), holes, view_depth, far[1], planes, pose[0],
                                                poses.focal, patch_size=patch_size, margin=margin, seed=seed,
                                                occluder=guessed & ~holes, interrupt=interrupt)
            # the image-space fill of a group of holes that lie all on a plane would be replaced: not run
            filled, fdepth = _fill_view_holes(feats, view_depth, holes, far=far, skip=on, **fill)
            if planes:
                filled = torch.where(on[..., None], p_rgb, filled)
                fdepth = torch.where(on, p_depth, fdepth)
        else:
            filled, fdepth = feats.permute(1, 2, 0), view_depth
        lifted = holes
        reveals = torch.zeros_like(holes)
        if plate is not None and bool(plate.any()):
            # 2. what the view reveals behind the characters, inpainted here instead of showing the plate: the
            # background without its plate points, the holes of step 1 now known, the characters occluding it (the
            # near side of the holes they open: masked rim, never a copy source), as in a single-layer scene
            seen = splat(_select(background, ~plate), pose, poses.focal, size, z_tolerance=z_tolerance)
            cover, c_rgb, c_depth = _character_view(characters, pose, poses.focal, size, z_tolerance)
            # unseen: no other point lands there, or only points behind the plate's (the points an earlier key view
            # lifted at the far side's depth do not hide the plate in front of them: the frame would show the plate)
            unseen = ((seen.weight <= 0)[0, 0] | (seen.depth[0, 0] > view_depth * (1.0 + z_tolerance))) & ~holes
            cover = cover & (unseen | (c_depth < view_depth))
            reveals = unseen & ~cover
            if bool(reveals.any()):
                known_rgb = torch.where(holes[None], filled.permute(2, 0, 1), seen.features[0, 0:3].clamp(0.0, 1.0))
                known_depth = torch.where(holes, fdepth, seen.depth[0, 0])
                ctx_rgb = torch.where(cover[None], c_rgb, known_rgb)
                ctx_depth = torch.where(cover, c_depth, known_depth)
                far = _far_side(ctx_rgb, ctx_depth, reveals, far_tolerance)
                on = None
                if planes:
                    # reads the far side's depth only, never the image-space fill's colours (so that fill may skip)
                    p_rgb, p_depth, on = plane_fill(ctx_rgb.permute(1, 2, 0), reveals, ctx_depth, far[1], planes,
                                                    pose[0], poses.focal, patch_size=reveal_patch_size, margin=margin,
                                                    seed=seed, occluder=cover | guessed, confirm_rows=True,
                                                    interrupt=interrupt)
                # each band copies from within one margin of itself, not from the whole group's window
                # 7-px patches: the reveals are wider than the depth edges' slivers (see REVEAL_PATCH); as in step
                # 1, a band that lies all on a plane is not inpainted in image space (plane_fill replaces it)
                r_filled, r_depth = _fill_view_holes(ctx_rgb, ctx_depth, reveals, far=far, split_depth=True,
                                                     reach=margin, occluder=cover, skip=on,
                                                     **dict(fill, patch_size=reveal_patch_size))
                if planes:
                    r_filled = torch.where(on[..., None], p_rgb, r_filled)
                    r_depth = torch.where(on, p_depth, r_depth)
                filled = torch.where(reveals[..., None], r_filled, filled)
                fdepth = torch.where(reveals, r_depth, fdepth)
                lifted = holes | reveals
        if not bool(lifted.any()):
            continue
        if refiner is not None:
            mask = grow_mask(lifted, REFINE_DILATION)
            if bool(reveals.any()):
                # the diffusion model sees a clean background: the characters' area shows the plate and is repainted
                # too (only hole pixels are kept), as the original masks the rendered instances
                filled = torch.where(cover[..., None], feats.permute(1, 2, 0), filled)
                mask = mask | cover
            filled = _refine(refiner, filled, mask, filled)
        pix = lifted.reshape(-1).nonzero().squeeze(1)
        zc = fdepth.reshape(-1)[pix]
        ok = torch.isfinite(zc) & (zc > 0)
        pix, zc = pix[ok], zc[ok]
        if pix.numel() == 0:
            continue
        colour = filled.reshape(-1, 3)[pix]
        new_feats = torch.zeros(pix.numel(), background.features.shape[1], dtype=colour.dtype, device=colour.device)
        new_feats[:, 0:3] = colour
        new_feats[:, 3] = 1.0
        new_feats[:, _REVEALED] = 1.0  # not visible in the input
        if plate is not None:
            # plate points that land on this view's reveals are replaced by the points inpainted there (and so are
            # those a pixel away: they land where the splat of the real background only grazes)
            keep = ~(plate & _lands_in(background, pose, poses.focal, size, grow_mask(reveals, 1)))
            background, plate = _select(background, keep), plate[keep]
            plate = torch.cat([plate, torch.zeros(pix.numel(), dtype=torch.bool, device=plate.device)])
        background = _concat(background, lift(pose[0], poses.focal, size, pix, zc, new_feats))
        key_poses.append(pose[0].cpu())
        report.times.append(float(poses.times[index]))
        report.hole_pixels.append(int(pix.numel()))
    if progress is not None and len(order):
        progress(len(order), len(order))
    if key_poses:
        report.poses = torch.stack(key_poses)
    return background, report
