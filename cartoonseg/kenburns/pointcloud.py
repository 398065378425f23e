"""Point clouds for the 3D Ken Burns effect: pinhole unprojection, forward splatting with a z-buffer and sub-pixel
(bilinear) accumulation, crack filling and far-side hole filling, in plain PyTorch (CPU, CUDA, MPS).

Follows the rendering described in "3D Ken Burns Effect from a Single Image" (Niklaus et al. 2019, §3.3: the point
cloud is re-projected, holes are disocclusions) and in CartoonSegmentation (arXiv 2312.01943, §6.1). The original
uses hand-written CUDA kernels through cupy; this is an independent torch formulation:

* every point is splatted to its 4 neighbouring pixels with bilinear weights (sub-pixel accumulation); where a pose
  magnifies the points that land in the frame more than :data:`DENSIFY_MAGNIFICATION` (a strong zoom), those points
  are first subdivided into ``s x s`` sub-points interpolated bilinearly from their same-surface grid neighbours
  (:func:`densify`), so the splats stay gap-free and a magnified surface is resampled bilinearly instead of turning
  into holes;
* a z-buffer (``scatter_reduce(amin)`` over those 4 contributions) keeps, per pixel, only contributions within a
  relative tolerance of the nearest one, so a near surface hides what is behind it, except on its outline where
  it covers less than half of a pixel (there both surfaces are blended by weight, so edges do not grow);
* one-pixel *cracks* (a far surface seen through a gap of a magnified near surface) are detected on the z-buffer
  and closed from the near side;
* disocclusion *holes* are filled afterwards from their farther side (:mod:`cartoonseg.kenburns.fill`).

Geometry and camera poses are defined in :mod:`cartoonseg.kenburns.camera`.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PointCloud", "SplatResult", "densify", "fill_cracks", "lift", "project", "splat", "unproject"]

# Contributions whose depth exceeds the pixel's nearest depth by more than this fraction are hidden.
Z_TOLERANCE = 0.03
# Bilinear weight a contribution needs to take part in the z-buffer (see splat).
ZBUFFER_MIN_WEIGHT = 0.01
# Summed weight below which the nearest surface does not hide the other contributions of a pixel (see splat).
EDGE_COVERAGE = 0.5
# Points closer than this fraction of the anchor depth to the camera plane are culled.
NEAR_PLANE = 1e-3
# Bilinear 4-neighbour splats leave no gaps below 2x magnification; points magnified more are subdivided (densify).
DENSIFY_MAGNIFICATION = 1.9
# At most this many sub-points per axis (a point magnified up to 30x still lands gap-free).
MAX_SUBDIVISION = 16


@dataclasses.dataclass
class PointCloud:
    """Points of one layer, stored as per-point source coordinates (cheap to re-project).

    Attributes:
        ax: ``[N]`` ``Z * (u - c_x)`` (= ``f X``).
        ay: ``[N]`` ``Z * (v - c_y)`` (= ``f Y``).
        z: ``[N]`` depth ``Z`` (> 0).
        features: ``[N,C]`` per-point values that are accumulated (premultiplied colour, alpha, ...).
    """

    ax: Tensor
    ay: Tensor
    z: Tensor
    features: Tensor

    def __len__(self) -> int:
        return int(self.z.numel())


@dataclasses.dataclass
class SplatResult:
    """Splatted layer for ``T`` frames.

    Attributes:
        features: ``[T,C,H,W]`` weight-normalised accumulated features (0 where nothing landed).
        weight: ``[T,1,H,W]`` accumulated bilinear weight of the accepted contributions (0 = hole).
        depth: ``[T,1,H,W]`` z-buffer (nearest accepted depth; ``inf`` where nothing landed).
    """

    features: Tensor
    weight: Tensor
    depth: Tensor


def unproject(depth: Tensor, features: Tensor, keep: Tensor | None = None) -> PointCloud:
    """Pinhole unprojection of a depth map (focal ``max(H,W)/2``, principal point at the image centre).

    Args:
        depth: ``[H,W]`` positive depth.
        features: ``[C,H,W]`` values carried by each point.
        keep: optional bool ``[H,W]``: which pixels become points (default: all with finite positive depth).

    Returns:
        The point cloud in the layout :func:`splat` consumes.
    """
    if depth.dim() != 2 or features.dim() != 3 or features.shape[1:] != depth.shape:
        raise ValueError(
            f"unproject needs depth [H,W] and features [C,H,W] of the same size, got {tuple(depth.shape)} and "
            f"{tuple(features.shape)}"
        )
    h, w = depth.shape
    valid = torch.isfinite(depth) & (depth > 0)
    if keep is not None:
        valid = valid & keep
    vv, uu = torch.meshgrid(
        torch.arange(h, device=depth.device, dtype=depth.dtype),
        torch.arange(w, device=depth.device, dtype=depth.dtype),
        indexing="ij",
    )
    z = depth[valid]
    ax = z * (uu[valid] - 0.5 * (w - 1))
    ay = z * (vv[valid] - 0.5 * (h - 1))
    return PointCloud(ax=ax, ay=ay, z=z, features=features[:, valid].t().contiguous())


def lift(pose: Tensor, focal: float, size: tuple[int, int], pixels: Tensor, cam_depth: Tensor, features: Tensor) -> PointCloud:
    """Points seen at ``pixels`` of the view ``pose`` at camera depth ``cam_depth`` (the inverse of
    :func:`~cartoonseg.kenburns.pointcloud.project`).

    Args:
        pose: ``[6]`` the view's camera.
        focal: focal length in pixels.
        size: ``(H, W)`` of the view.
        pixels: ``[M]`` flat pixel indices ``y * W + x``.
        cam_depth: ``[M]`` camera-space depth (``Z - t_z``, > 0).
        features: ``[M,C]`` point features.
    """
    h, w = size
    tx, ty, tz, k, px, py = (float(v) for v in pose.tolist())
    y = (pixels // w).to(cam_depth.dtype)
    x = (pixels % w).to(cam_depth.dtype)
    ax = (x - 0.5 * (w - 1) - px) * cam_depth / k + focal * tx
    ay = (y - 0.5 * (h - 1) - py) * cam_depth / k + focal * ty
    return PointCloud(ax=ax, ay=ay, z=cam_depth + tz, features=features)


def project(cloud: PointCloud, poses: Tensor, focal: float, size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Project a point cloud with ``T`` camera poses.

    Args:
        cloud: the points.
        poses: ``[T,6]`` rows ``(t_x, t_y, t_z, k, p_x, p_y)``.
        focal: focal length in pixels.
        size: ``(H, W)`` of the output.

    Returns:
        ``x, y, z``: ``[T,N]`` output pixel coordinates and camera-space depth (``z <= 0`` behind the camera).
    """
    h, w = size
    tx, ty, tz, k, px, py = (poses[:, i : i + 1] for i in range(6))
    z = cloud.z[None, :] - tz
    inv = k / z
    x = (0.5 * (w - 1)) + px + inv * (cloud.ax[None, :] - focal * tx)
    y = (0.5 * (h - 1)) + py + inv * (cloud.ay[None, :] - focal * ty)
    return x, y, z


def densify(cloud: PointCloud, poses: Tensor, focal: float, size: tuple[int, int], *, near: float,
            z_tolerance: float = Z_TOLERANCE) -> PointCloud:
    """Subdivide the points that some pose of ``poses`` magnifies by more than :data:`DENSIFY_MAGNIFICATION` while
    they land in (or next to) its frame: a point magnified ``m`` times becomes ``s x s`` sub-points, ``s = ceil(m /
    DENSIFY_MAGNIFICATION)`` (at most :data:`MAX_SUBDIVISION`), spread over its source pixel. A sub-point's features
    and depth are interpolated bilinearly from the point and its grid neighbours (points of :func:`unproject`) on the
    same surface (depth within ``z_tolerance``); across a depth edge, or for points off the grid, it keeps its
    point's. Points that no pose magnifies that much are returned as they are (the cloud itself when none is).

    Args:
        cloud: points unprojected on the ``size`` grid (other points are subdivided without interpolation).
        poses: ``[T,6]`` camera poses; focal, size: as for :func:`splat`.
        near: near-plane depth (points behind it in every pose are never subdivided).
    """
    if len(cloud) == 0:
        return cloud
    h, w = size
    poses = poses.to(device=cloud.z.device, dtype=cloud.z.dtype)
    x, y, zc = project(cloud, poses, focal, size)
    k = poses[:, 3:4]
    mag = torch.where(zc > near, k * cloud.z[None, :] / zc.clamp_min(near), 0.0)
    inside = (x > -2.0) & (x < w + 1.0) & (y > -2.0) & (y < h + 1.0)
    need = torch.where(inside, mag, 0.0).amax(0)  # [N]: the largest on-screen magnification of each point
    factor = torch.ceil(need / DENSIFY_MAGNIFICATION).clamp(1, MAX_SUBDIVISION).long()
    if int(factor.max()) <= 1:
        return cloud
    # grid position of every point (unproject's pixel centres) and, per grid pixel, the point there
    cx, cy = 0.5 * (w - 1), 0.5 * (h - 1)
    u, v = cloud.ax / cloud.z + cx, cloud.ay / cloud.z + cy
    ui, vi = torch.round(u), torch.round(v)
    on_grid = ((u - ui).abs() < 1e-3) & ((v - vi).abs() < 1e-3) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    ui, vi = ui.long().clamp(0, w - 1), vi.long().clamp(0, h - 1)
    index = torch.full((h * w,), -1, dtype=torch.long, device=cloud.z.device)
    grid_points = on_grid.nonzero().squeeze(1)
    index[vi[grid_points] * w + ui[grid_points]] = grid_points

    def neighbour(i: Tensor, sx: Tensor, sy: Tensor) -> tuple[Tensor, Tensor]:
        """The grid neighbour of points ``i`` offset by ``(sx, sy)`` and whether it lies on their surface."""
        nu, nv = ui[i] + sx, vi[i] + sy
        ok = on_grid[i] & (nu >= 0) & (nu < w) & (nv >= 0) & (nv < h)
        j = torch.where(ok, index[(nv.clamp(0, h - 1) * w + nu.clamp(0, w - 1))], -1)
        ok &= j >= 0
        jj = j.clamp_min(0)
        zi, zj = cloud.z[i], cloud.z[jj]
        ok &= (torch.maximum(zi, zj) <= torch.minimum(zi, zj) * (1.0 + z_tolerance))
        return jj, ok

    keep = factor <= 1
    ax, ay, zs, feats = [cloud.ax[keep]], [cloud.ay[keep]], [cloud.z[keep]], [cloud.features[keep]]
    for s in torch.unique(factor[~keep]).tolist():
        pts = (factor == s).nonzero().squeeze(1)
        offsets = (torch.arange(s, device=cloud.z.device, dtype=cloud.z.dtype) + 0.5) / s - 0.5
        dv, du = torch.meshgrid(offsets, offsets, indexing="ij")
        du, dv = du.reshape(1, -1), dv.reshape(1, -1)  # [1,S]
        i = pts[:, None].expand(-1, du.shape[1]).reshape(-1)  # [P*S]
        du, dv = du.expand(len(pts), -1).reshape(-1), dv.expand(len(pts), -1).reshape(-1)
        sx, sy = torch.sign(du).long(), torch.sign(dv).long()
        fu, fv = du.abs(), dv.abs()
        parts = [(i, torch.ones_like(fu, dtype=torch.bool), (1 - fu) * (1 - fv))]
        for ox, oy, wgt in ((sx, torch.zeros_like(sy), fu * (1 - fv)), (torch.zeros_like(sx), sy, (1 - fu) * fv),
                            (sx, sy, fu * fv)):
            j, ok = neighbour(i, ox, oy)
            parts.append((j, ok, wgt))
        total = sum(torch.where(ok, wgt, 0.0) for _, ok, wgt in parts)
        z = sum(torch.where(ok, wgt, 0.0) * cloud.z[j] for j, ok, wgt in parts) / total
        f = sum(torch.where(ok, wgt, 0.0)[:, None] * cloud.features[j] for j, ok, wgt in parts) / total[:, None]
        su, sv = u[i] + du, v[i] + dv
        ax.append(z * (su - cx))
        ay.append(z * (sv - cy))
        zs.append(z)
        feats.append(f)
    return PointCloud(ax=torch.cat(ax), ay=torch.cat(ay), z=torch.cat(zs), features=torch.cat(feats))


def splat(
    cloud: PointCloud,
    poses: Tensor,
    focal: float,
    size: tuple[int, int],
    *,
    z_tolerance: float = Z_TOLERANCE,
    near: float | None = None,
    crack_fill: bool = True,
    subdivide: bool = True,
) -> SplatResult:
    """Forward-splat a point cloud into ``T`` frames with a z-buffer and bilinear accumulation.

    Args:
        cloud: the points (``features`` ``[N,C]``).
        poses: ``[T,6]`` camera poses.
        focal: focal length in pixels.
        size: ``(H, W)`` of the output frames.
        z_tolerance: relative depth band (of the pixel's nearest depth) whose contributions are blended.
        near: near-plane depth; points with camera depth below it are dropped (default: a small fraction of the
            cloud's smallest depth).
        crack_fill: close one-pixel cracks (see :func:`fill_cracks`).
        subdivide: subdivide points magnified more than :data:`DENSIFY_MAGNIFICATION` (see :func:`densify`).

    Returns:
        The splatted frames.
    """
    h, w = size
    t = poses.shape[0]
    c = cloud.features.shape[1]
    device, dtype = cloud.z.device, cloud.z.dtype
    n_pix = t * h * w
    if len(cloud) == 0:
        return SplatResult(
            features=torch.zeros(t, c, h, w, device=device, dtype=dtype),
            weight=torch.zeros(t, 1, h, w, device=device, dtype=dtype),
            depth=torch.full((t, 1, h, w), float("inf"), device=device, dtype=dtype),
        )
    if near is None:
        near = NEAR_PLANE * float(cloud.z.min())
    if subdivide:  # strong zooms: no gaps between the splats
        cloud = densify(cloud, poses, focal, size, near=near, z_tolerance=z_tolerance)
    x, y, z = project(cloud, poses.to(device=device, dtype=dtype), focal, size)
    visible = z > near
    x0f, y0f = torch.floor(x), torch.floor(y)
    fx, fy = x - x0f, y - y0f
    # out-of-range coordinates are clamped before the int cast; their weights are zeroed below
    x0 = x0f.clamp(-2, w + 1).long()
    y0 = y0f.clamp(-2, h + 1).long()
    base = y0 * w + x0 + (torch.arange(t, device=device) * (h * w))[:, None]
    in_x = ((x0 >= 0) & (x0 < w), (x0 >= -1) & (x0 < w - 1))
    in_y = ((y0 >= 0) & (y0 < h), (y0 >= -1) & (y0 < h - 1))
    z = z.reshape(-1)

    # the 4 bilinear neighbours: flat pixel index (n_pix = trash slot) and weight, all [T*N]
    neighbours = []
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        wgt = (fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy)
        ok = visible & in_x[dx] & in_y[dy] & (wgt > 0)
        idx = torch.where(ok, base + (dy * w + dx), n_pix).reshape(-1)
        neighbours.append((idx, torch.where(ok, wgt, 0.0).reshape(-1)))

    # only contributions with a real share of the pixel may set its z-buffer: a point whose splat grazes a pixel
    # with a tiny weight (numerically even ~1e-7 at an identity pose) must not hide the point that sits on it
    zbuf = torch.full((n_pix + 1,), float("inf"), device=device, dtype=dtype)
    for idx, wgt in neighbours:
        zbuf.scatter_reduce_(0, torch.where(wgt >= ZBUFFER_MIN_WEIGHT, idx, n_pix), z, reduce="amin", include_self=True)
    if crack_fill:
        zbuf[:n_pix] = _close_zbuffer_cracks(zbuf[:n_pix].view(t, h, w), poses, z_tolerance).reshape(-1)
    z_limit = zbuf * (1.0 + z_tolerance)

    weight = torch.zeros(n_pix + 1, device=device, dtype=dtype)
    acc = torch.zeros(n_pix + 1, c, device=device, dtype=dtype)
    feats = cloud.features if t == 1 else cloud.features.repeat(t, 1)  # [T*N,C]
    for idx, wgt in neighbours:
        wgt = torch.where(z <= z_limit[idx], wgt, 0.0)
        weight.index_add_(0, idx, wgt)
        acc.index_add_(0, idx, feats * wgt[:, None])
    if EDGE_COVERAGE > 0:
        # a pixel on the outline of a near surface (a neighbour is farther or empty) that the surface only grazes
        # (its contributions' weights sum below EDGE_COVERAGE: the pixel centre lies beyond the surface's last
        # points) is not hidden by it: the contributions behind are blended in too, by weight, so the edge is
        # resampled like the inside instead of growing by up to a pixel. Not where the pose magnifies the surface
        # 1.5x or more: there the splats leave gaps inside the surface too (see _close_zbuffer_cracks).
        zb = zbuf[:n_pix].view(t, 1, h, w)
        nw = weight[:n_pix].view(t, 1, h, w)
        tz = poses[:, 2].to(device=device, dtype=dtype).view(-1, 1, 1, 1)
        k = poses[:, 3].to(device=device, dtype=dtype).view(-1, 1, 1, 1)
        grazed = (nw > 0) & (nw < EDGE_COVERAGE) & (k * (zb + tz) < 1.5 * zb)
        grazed &= F.max_pool2d(zb, 3, stride=1, padding=1) > zb * (1.0 + z_tolerance) ** 2
        if bool(grazed.any()):
            grazed_flat = torch.cat([grazed.reshape(-1), grazed.new_zeros(1)])
            for idx, wgt in neighbours:
                behind = (grazed_flat[idx] & (z > z_limit[idx]) & (wgt > 0)).nonzero().squeeze(1)
                weight.index_add_(0, idx[behind], wgt[behind])
                acc.index_add_(0, idx[behind], feats[behind] * wgt[behind, None])

    weight = weight[:n_pix].view(t, 1, h, w)
    features = acc[:n_pix].view(t, h, w, c).permute(0, 3, 1, 2)
    features = features / weight.clamp_min(1e-8)
    depth = torch.where(weight > 0, zbuf[:n_pix].view(t, 1, h, w), float("inf"))
    result = SplatResult(features=features, weight=weight, depth=depth)
    if crack_fill:
        result = fill_cracks(result, poses)
    return result


def _neighbour_pairs(x: Tensor, fill: float) -> list[tuple[Tensor, Tensor]]:
    """The 4 pairs of opposite 8-neighbours of every pixel of ``x`` ``[...,H,W]`` (padded with ``fill``)."""
    p = F.pad(x.unsqueeze(-3) if x.dim() == 3 else x, (1, 1, 1, 1), value=fill)
    if x.dim() == 3:
        p = p.squeeze(-3)
    h, w = x.shape[-2:]

    def at(dy: int, dx: int) -> Tensor:
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    return [(at(0, -1), at(0, 1)), (at(-1, 0), at(1, 0)), (at(-1, -1), at(1, 1)), (at(-1, 1), at(1, -1))]


def _close_zbuffer_cracks(zbuf: Tensor, poses: Tensor, tol: float) -> Tensor:
    """Where both opposite neighbours of a pixel are nearer (beyond the tolerance) than the pixel itself *and* the
    near surface is magnified enough to open gaps between bilinear splats (>= 1.5x; with 4-neighbour splats gaps
    need about 2x), the pixel is a crack in the near surface: lower its z-buffer to the near side so the far
    contributions seen through it are rejected. Without the magnification test a genuine one-pixel far detail
    (or depth noise) would be erased.

    Args:
        zbuf: ``[T,H,W]`` nearest depth per pixel (``inf`` = empty).
        poses: ``[T,6]`` the poses of the frames.
    """
    tz = poses[:, 2].to(zbuf).view(-1, 1, 1)
    k = poses[:, 3].to(zbuf).view(-1, 1, 1)
    limit = zbuf / (1.0 + tol) ** 2
    out = zbuf
    for a, b in _neighbour_pairs(zbuf, float("inf")):
        near_side = torch.maximum(a, b)
        magnification = k * near_side / (near_side - tz).clamp_min(1e-12)
        crack = (a < limit) & (b < limit) & (magnification >= 1.5)
        out = torch.where(crack, torch.minimum(out, near_side), out)
    return out


def fill_cracks(layer: SplatResult, poses: Tensor, iterations: int = 2) -> SplatResult:
    """Fill empty pixels that lie inside one magnified surface: some pair of opposite 8-neighbours is covered by
    points of similar depth (within the z tolerance) that the pose magnifies at least 1.5x (bilinear splats leave
    no gaps below about 2x, so an empty pixel in a less magnified surface is a real hole, e.g. in a character's
    mask). The pixel takes the mean of the nearest such pairs. A gap between two *different* surfaces (a thin
    disocclusion) is left for the far-side hole filling. ``iterations`` passes close cracks up to that many pixels
    wide; filled pixels get a small weight (covered, but never dominant).

    Args:
        layer: a splatted layer.
        poses: ``[T,6]`` the poses of its frames.
    """
    features, weight, depth = layer.features, layer.weight, layer.depth
    tz = poses[:, 2].to(depth).view(-1, 1, 1, 1)
    k = poses[:, 3].to(depth).view(-1, 1, 1, 1)
    for _ in range(iterations):
        empty = weight <= 0
        if not bool(empty.any()):
            break
        pairs_z = _neighbour_pairs(torch.where(empty, float("inf"), depth), float("inf"))
        pairs_f = _neighbour_pairs(features, 0.0)
        pair_depth = []
        for za, zb in pairs_z:
            same = torch.isfinite(za) & torch.isfinite(zb) & (torch.maximum(za, zb) <= torch.minimum(za, zb) * (1.0 + Z_TOLERANCE))
            pair_depth.append(torch.where(same, torch.maximum(za, zb), float("inf")))
        z_best = torch.stack(pair_depth).amin(0)
        magnified = k * z_best / (z_best - tz).clamp_min(1e-12) >= 1.5
        target = empty & torch.isfinite(z_best) & magnified
        if not bool(target.any()):
            break
        acc_f = torch.zeros_like(features)
        count = torch.zeros_like(weight)
        for zp, (fa, fb) in zip(pair_depth, pairs_f):
            sel = (torch.isfinite(zp) & (zp <= z_best * (1.0 + Z_TOLERANCE))).to(features.dtype)
            acc_f = acc_f + sel * 0.5 * (fa + fb)
            count = count + sel
        filled = acc_f / count.clamp_min(1.0)
        features = torch.where(target, filled, features)
        depth = torch.where(target, z_best, depth)
        weight = torch.where(target, torch.full_like(weight, 1e-3), weight)
    return SplatResult(features=features, weight=weight, depth=depth)
