"""Planar structure guidance for the end-view inpainting: slanted scene planes (a ground, a floor, a street) are
found in the input view's depth, and the holes of a key view that lie on one are inpainted in the plane's own
rectified coordinates, where its pattern is free of perspective (Huang et al. 2014, "Image Completion using Planar
Structure Guidance"), then given the plane's exact depth.

PatchMatch copies patches by translation only. On a slanted plane the pattern's scale and shape change with depth
(the tiles of a floor shrink toward the horizon), so image-space patches from another distance never fit, and the
strip a character reveals on the ground is filled with tiles of the wrong size. In the plane's coordinates the
same pattern is a plain repetition, which PatchMatch continues well. Fronto-parallel planes (a far wall) gain
nothing (their pattern already repeats in the image) and are left to the image-space fill.

Planes are fitted in the input view as surfaces whose nearness (``1/Z``) is linear in the pixel coordinates, which
is exactly what a plane is in the renderer's pinhole model, and stays so when a depth estimator's disparity is off
by a scale and a shift.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import grow_mask
from .fill import fill_push_pull, hole_groups, patchmatch_config
from .pointcloud import PointCloud, lift

__all__ = ["Plane", "fit_planes", "plane_depth", "plane_fill"]

#: Relative tolerance (of nearness in the fit, of depth in a view) for a pixel to lie on a plane, at least: on noisy
#: depth (a depth estimator's) it is NOISE_SIGMAS times the noise's robust standard deviation where that is larger.
PLANE_TOLERANCE = 0.03
#: A plane's tolerance is at least this many standard deviations of the depth noise (:attr:`Plane.noise`). A copy
#: source of the rectified fill is a whole patch of the plane's pixels (a 5-px patch spans about 36 of them), all of
#: which must pass the test: with Gaussian noise 3.5 sigmas miss 0.05 % of them, so 98 % of such patches are whole
#: (2.5 sigmas: 1.2 % missed, 65 % whole; a fixed 3 % with 3 % noise: a third of the ground missed).
NOISE_SIGMAS = 3.5
#: Iterations of the truncated MAD estimate of a plane's noise (each one's band is 3 of the last one's sigmas).
_NOISE_ITERS = 6
#: A plane must hold at least this fraction of the background pixels it is fitted on.
MIN_SUPPORT = 0.1
#: Planes closer than this angle (degrees) to facing the camera are left to the image-space fill.
MIN_SLANT_DEG = 30.0
# RANSAC: hypotheses, and the points they are scored on.
_RANSAC_ITERS = 256
_RANSAC_POINTS = 20000
#: Depth ratio spanned by one rectified grid (its cells have one size, the holes' pixel footprint at that depth).
BAND_RATIO = 1.5
#: Context of a rectified grid around its holes, in group margins (``margin`` px at the holes' scale).
CONTEXT_MARGINS = 2
#: Cells beside the holes that are not the plane's (the occluder, other surfaces) are filled with them within this
#: many patch sides, so their guessed colours do not steer the patches at the holes' boundary.
RIM_PATCHES = 2
#: A surface in front of the plane this many margins away on a reveal's iso-depth line may still continue over it.
FRONT_REACH = 4
# Largest rectified grid (cells); a larger one is sampled more coarsely.
_MAX_CELLS = 160 * 160
#: A cell is evidence and source of the pattern's lattice (:mod:`cartoonseg.inpaint.lattice`) only where one pixel of the
#: view spans at most this many cells' side: farther off (toward the horizon) the rectified grid magnifies a few
#: pixels, and what it shows there is the view's blur and aliasing, not the pattern.
LATTICE_FOOTPRINT = 2.0


@dataclasses.dataclass(frozen=True)
class Plane:
    """A scene plane in the renderer's point coordinates ``q = (ax, ay, z)`` (``ax = Z (u - c_x)``, see
    :func:`~cartoonseg.kenburns.pointcloud.unproject`): the points with ``coef . q = 1``. In the input view its
    nearness is ``coef[0] (u - c_x) + coef[1] (v - c_y) + coef[2]``.

    Attributes:
        coef: ``(a, b, c)``.
        support: fraction of the fitted pixels that lie on it.
        noise: the depth's noise, the robust standard deviation of the relative nearness residuals of the largest
            plane found (about 0 for exact depth; a depth estimator's is noisy): the tolerance is at least
            :data:`NOISE_SIGMAS` times this (:meth:`tolerance`). One figure for all planes of a depth map, measured
            on the best-supported one, so a spurious plane cannot widen its own tolerance to its scatter.
    """

    coef: tuple[float, float, float]
    support: float
    noise: float = 0.0

    def tolerance(self, base: float = PLANE_TOLERANCE) -> float:
        """Relative tolerance of "on this plane": ``base``, or wider for a plane of noisy depth."""
        return max(base, NOISE_SIGMAS * self.noise)

    def slant_deg(self, focal: float) -> float:
        """Angle between the plane's normal and the optical axis (0 = facing the camera)."""
        a, b, c = self.coef
        n = math.sqrt((a * focal) ** 2 + (b * focal) ** 2 + c * c)
        return math.degrees(math.acos(min(1.0, abs(c) / n))) if n > 0 else 0.0


def fit_planes(
    cloud: PointCloud,
    focal: float,
    *,
    keep: Tensor | None = None,
    max_planes: int = 2,
    tolerance: float = PLANE_TOLERANCE,
    min_support: float = MIN_SUPPORT,
    min_slant_deg: float = MIN_SLANT_DEG,
    seed: int = 0,
) -> list[Plane]:
    """The slanted planes of a background layer, largest first (RANSAC on nearness linear in the pixel coordinates,
    refined by least squares on its inliers).

    Args:
        cloud: the background layer's points (input view).
        focal: focal length in pixels.
        keep: ``[N]`` bool, the points to fit on (e.g. not the plate's); default all.
        max_planes: at most this many slanted planes.
        tolerance: relative nearness residual of an inlier, at least (:data:`NOISE_SIGMAS` times the depth's noise,
            measured on the first plane found, where that is larger; see :attr:`Plane.noise`).
        min_support: a plane holds at least this fraction of the points fitted on.
        min_slant_deg: planes facing the camera more than this are skipped (their inliers removed all the same).
        seed: RANSAC seed (the result is deterministic for a seed).

    Returns:
        The planes found (possibly none).
    """
    z = cloud.z if keep is None else cloud.z[keep]
    ax = cloud.ax if keep is None else cloud.ax[keep]
    ay = cloud.ay if keep is None else cloud.ay[keep]
    ok = torch.isfinite(z) & (z > 0)
    z, ax, ay = z[ok].double(), ax[ok].double(), ay[ok].double()
    total = z.numel()
    if total < 3:
        return []
    gen = torch.Generator().manual_seed(int(seed))
    feats = torch.stack([ax / z, ay / z, torch.ones_like(z)], 1)  # [N,3]: (u - cx, v - cy, 1)
    near = 1.0 / z
    remaining = torch.ones(total, dtype=torch.bool)
    planes: list[Plane] = []
    noise = None  # the depth's noise, measured on the first (largest) plane
    for _ in range(max_planes + 2):  # fronto-parallel planes found on the way are removed, not returned
        if len(planes) >= max_planes:
            break
        idx = remaining.nonzero().squeeze(1)
        if idx.numel() < max(3, min_support * total):
            break
        sub = idx[torch.randperm(idx.numel(), generator=gen)[:_RANSAC_POINTS]]
        tri = sub[torch.randint(sub.numel(), (_RANSAC_ITERS, 3), generator=gen)]
        a_mat, b_vec = feats[tri], near[tri]  # [I,3,3], [I,3]
        good = torch.linalg.det(a_mat).abs() > 1e-12
        if not bool(good.any()):
            break
        coefs = torch.linalg.solve(a_mat[good], b_vec[good][..., None])[..., 0]  # [I',3]
        best = int(torch.argmax(_inlier_counts(feats[sub], near[sub], coefs, tolerance)))
        coef = coefs[best]
        coef = _refine(feats, near, idx, coef, tolerance)
        # the depth's noise (an estimator's): a wider tolerance, the fit refined again on the inliers within it
        if noise is None:
            noise = _noise(((feats[idx] @ coef - near[idx]).abs() / near[idx]), tolerance)
        tol = max(tolerance, NOISE_SIGMAS * noise)
        if tol > tolerance:
            coef = _refine(feats, near, idx, coef, tol)
        on = remaining & (((feats @ coef - near).abs() / near) < tol)
        count = int(on.sum())
        if count < min_support * total:
            break
        remaining &= ~on
        plane = Plane(coef=tuple(float(v) for v in coef), support=count / total, noise=noise)
        if plane.slant_deg(focal) >= min_slant_deg:
            planes.append(plane)
    return planes


def _refine(feats: Tensor, near: Tensor, idx: Tensor, coef: Tensor, tolerance: float) -> Tensor:
    """``coef`` refined twice by least squares (relative residuals) on the points ``idx`` within ``tolerance``."""
    for _ in range(2):
        inl = idx[((feats[idx] @ coef - near[idx]).abs() / near[idx]) < tolerance]
        if inl.numel() < 3:
            break
        w = 1.0 / near[inl]  # relative residuals
        coef = torch.linalg.lstsq(feats[inl] * w[:, None], (near[inl] * w)[:, None]).solution[:, 0]
    return coef


def _noise(resid: Tensor, tolerance: float) -> float:
    """Robust standard deviation of a plane's relative residuals ``resid`` (``|r|`` of the points not yet taken by
    another plane): the MAD (x 1.4826) of those within a band of 3 sigmas, starting from ``tolerance`` as sigma and
    iterated, so the other surfaces' points far from the plane do not count, and a noise larger than the tolerance
    is found all the same (the band widens with each estimate). Near 0 for exact depth."""
    sigma = tolerance
    for _ in range(_NOISE_ITERS):
        band = resid[resid < 3.0 * sigma]
        if band.numel() < 3:
            break
        sigma = 1.4826 * float(band.median())
        if sigma <= 0.0:
            break
    return sigma


#: Points scored per block in :func:`_inlier_counts` (a block's residuals stay in the CPU cache).
_SCORE_BLOCK = 256


def _inlier_counts(feats: Tensor, near: Tensor, coefs: Tensor, tolerance: float) -> Tensor:
    """``[I]`` number of points ``(feats [N,3], near [N])`` within relative ``tolerance`` of each hypothesis
    ``coefs [I,3]``, scored in blocks of points: the same counts as one ``[N,I]`` residual matrix, without writing
    and re-reading it from memory in every elementwise step."""
    counts = torch.zeros(coefs.shape[0], dtype=torch.long)
    ct = coefs.t()
    for i in range(0, feats.shape[0], _SCORE_BLOCK):
        n = near[i : i + _SCORE_BLOCK, None]
        resid = (feats[i : i + _SCORE_BLOCK] @ ct).sub_(n).abs_().div_(n)
        counts += (resid < tolerance).sum(0)
    return counts


def _rays(pose: Tensor, focal: float, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Origin ``[3]`` and per-pixel directions ``[H,W,3]`` (per unit camera depth) of the view ``pose`` in point
    coordinates (float64), from the renderer's one camera model (:func:`~cartoonseg.kenburns.pointcloud.lift`)."""
    h, w = size
    pixels = torch.arange(h * w)
    none = torch.zeros(h * w, 0, dtype=torch.float64)
    at0 = lift(pose, focal, size, pixels, torch.zeros(h * w, dtype=torch.float64), none)
    at1 = lift(pose, focal, size, pixels, torch.ones(h * w, dtype=torch.float64), none)
    origin = torch.stack([at0.ax[0], at0.ay[0], at0.z[0]])
    d = torch.stack([at1.ax - at0.ax, at1.ay - at0.ay, at1.z - at0.z], -1).reshape(h, w, 3)
    return origin, d


def plane_depth(plane: Plane, pose: Tensor, focal: float, size: tuple[int, int]) -> Tensor:
    """``[H,W]`` camera depth at which each pixel's ray of the view ``pose`` (``[6]``) meets ``plane`` (inf where it
    does not, in front of the camera)."""
    origin, d = _rays(pose, focal, size)
    coef = torch.tensor(plane.coef, dtype=torch.float64)
    denom = d @ coef
    c = (1.0 - float(origin @ coef)) / denom
    return torch.where((denom.abs() > 1e-12) & (c > 0), c, torch.full_like(c, math.inf)).float()


def _plane_on_both_sides(cp: Tensor, depth: Tensor, known: Tensor, reach: int, tolerance: float) -> Tensor:
    """Where a hole pixel sees the plane on both sides along its iso-depth line (the image row for a ground, the
    column for a side wall): of the nearest ``known`` pixels left and right of it, one lies on the plane within
    ``reach`` px, and neither is a surface in front of the plane within :data:`FRONT_REACH` reaches (a house or a
    fence there may continue behind the occluder over the pixel). ``cp`` ``[H,W]`` is the plane's depth in the
    view, ``depth`` the known pixels' depth."""
    inv = torch.where(torch.isfinite(cp), 1.0 / cp.clamp_min(1e-6), torch.zeros_like(cp))
    gy = float((inv[1:] - inv[:-1]).abs().mean()) if cp.shape[0] > 1 else 0.0
    gx = float((inv[:, 1:] - inv[:, :-1]).abs().mean()) if cp.shape[1] > 1 else 0.0
    transpose = gx > gy  # depth changes along the rows: iso-depth lines are columns
    if transpose:
        cp, depth, known = cp.t(), depth.t(), known.t()
    h, w = known.shape
    x = torch.arange(w).expand(h, w)
    none = torch.full_like(x, -(10**9))
    left = torch.cummax(torch.where(known, x, none), dim=1).values  # nearest known pixel at or left of each
    right = w - 1 - torch.cummax(torch.where(known.flip(1), x, none), dim=1).values.flip(1)

    def side(idx: Tensor, dist: Tensor) -> tuple[Tensor, Tensor]:
        ok = (idx >= 0) & (idx < w)
        d = depth.gather(1, idx.clamp(0, w - 1))
        on = ok & (dist <= reach) & ((d - cp).abs() <= tolerance * cp)
        front = ok & ~on & (d < cp * (1.0 - tolerance)) & (dist <= FRONT_REACH * reach)
        return on, front

    on_left, front_left = side(left, x - left)
    on_right, front_right = side(right, right - x)
    out = (on_left | on_right) & ~front_left & ~front_right
    return out.t() if transpose else out


def _basis(plane: Plane, focal: float) -> tuple[Tensor, Tensor, Tensor]:
    """An orthonormal basis ``(e1, e2)`` of the plane in metric coordinates ``m = (ax / f, ay / f, z)`` (world units:
    a pattern is a plain repetition there) and the matrix ``[3,3]`` from point to metric coordinates."""
    to_metric = torch.diag(torch.tensor([1.0 / focal, 1.0 / focal, 1.0], dtype=torch.float64))
    a, b, c = plane.coef
    n = torch.tensor([a * focal, b * focal, c], dtype=torch.float64)  # normal in metric coordinates
    n = n / n.norm()
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    if float((n @ helper).abs()) > 0.9:
        helper = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    e1 = torch.linalg.cross(helper, n)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(n, e1)
    return e1, e2, to_metric


def plane_fill(
    rgb: Tensor,
    holes: Tensor,
    depth: Tensor,
    fill_depth: Tensor,
    planes: list[Plane],
    pose: Tensor,
    focal: float,
    *,
    patch_size: int = 5,
    margin: int = 16,
    seed: int = 0,
    tolerance: float = PLANE_TOLERANCE,
    occluder: Tensor | None = None,
    confirm_rows: bool = False,
    interrupt: Callable[[], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Inpaint the holes of one view that lie on a slanted plane in the plane's rectified coordinates.

    A hole pixel lies on a plane when its ray meets the plane no farther than its background-side depth
    (``fill_depth``, widened by ``tolerance``: the plane passes in front of the surface guessed there, so it is
    what shows) and the plane is seen within ``margin`` px; with ``confirm_rows`` (the wide reveals behind a
    character, whose background-side depth is an average of whatever lies around it) only where the hole's
    iso-depth line shows the plane on one side and no nearer surface on either (:func:`_plane_on_both_sides`).
    Per group of such holes, the window around them is resampled onto a grid in the plane (cells of the holes' own
    pixel size), PatchMatch fills the grid from the plane's known cells (known pixels whose depth is the plane's,
    never the ``occluder``), and the holes read their colour back from it and take the plane's depth.

    Cost: one PatchMatch run per group and depth band, nearly all of plane guidance's time; most of the cells it
    fills are the unlabelled ones within :data:`RIM_PATCHES` patch sides of the holes (a quality choice, see the
    README's Ken Burns cost figures).

    Args:
        rgb: ``[H,W,3]`` the view's colours in [0,1].
        holes: ``[H,W]`` bool, the pixels to fill.
        depth: ``[H,W]`` camera depth of the known pixels.
        fill_depth: ``[H,W]`` background-side depth of the holes.
        planes: from :func:`fit_planes`.
        pose: ``[6]`` the view's camera.
        focal: focal length in pixels.
        patch_size, margin, seed: PatchMatch patch side, context in px around each group, seed.
        tolerance: relative depth tolerance of "on the plane" (each plane's :meth:`Plane.tolerance` of it: wider
            where the plane's depth is noisy).
        occluder: ``[H,W]`` bool, known pixels that are neither sources nor evidence (the characters in front of
            the reveals, the plate, earlier inpainting).
        confirm_rows: label the holes by their rows (above) instead of by the plane seen nearby.
        interrupt: cancel check before each window.

    Returns:
        ``(colours [H,W,3], depth [H,W], filled [H,W] bool)``: colours and depth are set where ``filled``.
    """
    from ..inpaint import patchmatch_inpaint
    from ..inpaint.lattice import find_lattice, lattice_fill

    h, w = holes.shape
    dev = rgb.device
    out_rgb = rgb.clone()
    out_depth = depth.clone()
    done = torch.zeros_like(holes)
    if not planes or not bool(holes.any()):
        return out_rgb, out_depth, done
    config = patchmatch_config(patch_size)
    origin, rays = _rays(pose.cpu(), focal, (h, w))
    img = rgb.float().cpu()
    holes_c, depth_c, fill_c = holes.cpu(), depth.float().cpu(), fill_depth.float().cpu()
    occ = torch.zeros_like(holes_c) if occluder is None else occluder.cpu()
    for plane in planes:
        cp = plane_depth(plane, pose.cpu(), focal, (h, w))
        finite = torch.isfinite(cp)
        tol = plane.tolerance(tolerance)  # wider on a plane of noisy (estimated) depth
        on_known = ~holes_c & ~occ & finite & ((depth_c - cp).abs() <= tol * cp)
        if not bool(on_known.any()):
            continue
        on_hole = holes_c & ~done.cpu() & finite & (cp <= fill_c * (1.0 + tol))
        if confirm_rows:
            on_hole &= _plane_on_both_sides(cp, depth_c, ~holes_c & ~occ, margin, tol)
        else:
            on_hole &= grow_mask(on_known, margin)
        if not bool(on_hole.any()):
            continue
        e1, e2, to_metric = _basis(plane, focal)
        # metric coordinates of every pixel's plane point, and its plane coordinates (s, t)
        m = (origin + cp.double()[..., None].nan_to_num(posinf=0.0) * rays) @ to_metric
        s_map, t_map = m @ e1, m @ e2
        # one rectified grid per group of holes and per depth band (a grid's cells have one size, the holes' pixel
        # footprint, which changes with depth: a band spans at most a factor BAND_RATIO)
        ds_x, dt_x = torch.zeros(h, w, dtype=torch.float64), torch.zeros(h, w, dtype=torch.float64)
        ds_y, dt_y = torch.zeros_like(ds_x), torch.zeros_like(ds_x)
        ds_x[:, :-1], dt_x[:, :-1] = s_map.diff(dim=1), t_map.diff(dim=1)
        ds_y[:-1], dt_y[:-1] = s_map.diff(dim=0), t_map.diff(dim=0)
        footprint = (ds_x * dt_y - dt_x * ds_y).abs().sqrt()
        band_of = torch.floor(torch.log(cp.double().clamp_min(1e-6)) / math.log(BAND_RATIO))
        for group_all, (y0, y1, x0, x1) in hole_groups(on_hole, margin):
          for band in torch.unique(band_of[group_all]).tolist():
            group = group_all & (band_of == band)
            if interrupt is not None:
                interrupt()
            s_g, t_g = s_map[group], t_map[group]
            area = footprint[group]
            area = area[torch.isfinite(area) & (area > 0)]
            if area.numel() == 0:
                continue
            cell = float(area.median())
            pad = CONTEXT_MARGINS * margin * cell
            s0, s1 = float(s_g.min()) - pad, float(s_g.max()) + pad
            t0, t1 = float(t_g.min()) - pad, float(t_g.max()) + pad
            ns, nt = int(math.ceil((s1 - s0) / cell)) + 1, int(math.ceil((t1 - t0) / cell)) + 1
            if ns * nt > _MAX_CELLS:
                cell *= math.sqrt(ns * nt / _MAX_CELLS)
                ns, nt = int(math.ceil((s1 - s0) / cell)) + 1, int(math.ceil((t1 - t0) / cell)) + 1
            # the cells' pixels in the view
            ss = s0 + cell * torch.arange(ns, dtype=torch.float64)
            tt = t0 + cell * torch.arange(nt, dtype=torch.float64)
            p0 = torch.tensor(plane.coef, dtype=torch.float64) @ torch.linalg.inv(to_metric)  # normal . m = 1 form
            m0 = p0 / (p0 @ p0)  # the plane's point nearest the origin (metric coordinates)
            cells = m0 + tt[:, None, None] * e2 + ss[None, :, None] * e1  # [nt,ns,3] metric
            q = cells @ torch.linalg.inv(to_metric)  # point coordinates
            cz = q[..., 2] - float(origin[2])
            tx, ty, _, k, px, py = (float(v) for v in pose.tolist())
            cx = 0.5 * (w - 1) + px + k * (q[..., 0] - origin[0]) / cz
            cy = 0.5 * (h - 1) + py + k * (q[..., 1] - origin[1]) / cz
            inside = (cz > 0) & (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            grid = torch.stack([cx / max(1, w - 1) * 2 - 1, cy / max(1, h - 1) * 2 - 1], -1).float()[None]
            grid = torch.where(inside[None, ..., None], grid, torch.full_like(grid, -2.0))
            r_rgb = F.grid_sample(img.permute(2, 0, 1)[None], grid, mode="bilinear", align_corners=True)[0]
            r_src = F.grid_sample(on_known.float()[None, None], grid, mode="bilinear", align_corners=True)[0, 0]
            source = (r_src > 0.999) & inside
            if not bool(source.any()):
                continue
            # the cells the holes read back (bilinear: the cell under each and its neighbours) are filled; the other
            # cells that are not the plane's known pixels (off the window, the occluder, other surfaces) get a smooth
            # guess from the plane's cells, so they neither are copied nor steer the patches much
            fs, ft = (s_g - s0) / cell, (t_g - t0) / cell
            need = torch.zeros(nt, ns, dtype=torch.bool)
            need[ft.floor().long().clamp(0, nt - 1), fs.floor().long().clamp(0, ns - 1)] = True
            need = grow_mask(need, 1) & ~source
            if not bool(need.any()):
                continue
            # the cells next to them that are not the plane's (the occluder, other surfaces) are filled too, so
            # their guessed colours do not steer the patches at the holes' boundary (the occluder's rim in fill_view)
            need = grow_mask(need, RIM_PATCHES * patch_size) & ~source
            r_rgb = fill_push_pull(r_rgb[None], source[None, None])[0].permute(1, 2, 0).clamp(0.0, 1.0)
            # a regular pattern (tiles, planks, bricks) is continued along its lattice of repetition, which keeps
            # every tile edge where PatchMatch's patches inside flat tiles lose them; the rest by PatchMatch
            r_fp = F.grid_sample(footprint.float().nan_to_num(nan=math.inf).clamp_max(1e30)[None, None], grid,
                                 mode="bilinear", align_corners=True)[0, 0]
            sharp = source & (r_fp <= LATTICE_FOOTPRINT * cell)
            lattice = find_lattice(r_rgb, sharp)
            if lattice is not None:
                r_rgb, copied = lattice_fill(r_rgb, need, sharp, lattice)
                need = need & ~copied
            if bool(need.any()):
                try:
                    filled = patchmatch_inpaint(r_rgb, need, source=source, patch_size=patch_size, seed=seed,
                                                config=config, interrupt=interrupt)
                except ValueError:
                    continue  # no complete source patch on the plane here
            else:
                filled = r_rgb
            # the holes read their colour back at their plane coordinates
            gs = fs / max(1, ns - 1) * 2 - 1
            gt = ft / max(1, nt - 1) * 2 - 1
            back = torch.stack([gs, gt], -1).float()[None, None]
            colour = F.grid_sample(filled.permute(2, 0, 1)[None], back, mode="bilinear", align_corners=True)[0, :, 0]
            sel = group.to(dev)
            out_rgb[sel] = colour.t().to(out_rgb)
            out_depth[sel] = cp[group].to(out_depth)
            done |= sel
    return out_rgb, out_depth, done
