"""Triangle mesh of one character from its (soft) instance mask.

The mesh follows the outline: the boundary of the mask's support (every pixel with a visible alpha, grown by one
pixel so the anti-aliased fringe is inside) is traced with OpenCV (outer contours and holes), simplified
(Douglas-Peucker) and resampled so no boundary edge is longer than the sample spacing; interior samples lie on a
hexagonal grid at least half a spacing away from the boundary; extra points (the rig's handle positions) are
inserted as vertices. scipy's Delaunay triangulation of all points is then cut to the mask: a triangle is kept when
its centroid and its three edge midpoints lie inside the support, which removes triangles that bridge concavities,
holes and the gaps between thin limbs (a limb one pixel wide is three pixels wide after the growth and keeps its
boundary vertices, so it stays in the mesh).

Coordinates are ``(x, y)`` in image pixels (pixel centres at integers), float64.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from ..config import MAX_CANVAS

__all__ = ["Mesh", "MeshConfig", "build_mesh", "mask_support", "triangle_groups"]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh density and mask handling.

    Attributes:
        spacing: distance in pixels between samples (boundary and interior); 0 = automatic from the mask area,
            about ``target_vertices`` interior samples.
        target_vertices: interior sample count aimed at by the automatic spacing.
        min_spacing, max_spacing: bounds of the automatic spacing.
        support_threshold: alpha above which a pixel belongs to the character's support (what the mesh covers).
        grow: pixels the support is grown by (covers the soft fringe of the mask).
        min_hole_area: holes of the support smaller than this (in pixels; 0 = a quarter of spacing squared) are
            filled; larger holes stay holes in the mesh, so the parts around them deform separately.
        min_component_area: connected parts of the support smaller than this many pixels are dropped.
    """

    spacing: float = 0.0
    target_vertices: int = 300
    min_spacing: float = 3.0
    max_spacing: float = 48.0
    support_threshold: float = 0.02
    grow: int = 1
    min_hole_area: float = 0.0
    min_component_area: int = 4

    def __post_init__(self) -> None:
        if not (self.spacing == 0 or 1.0 <= self.spacing <= MAX_CANVAS):  # also refuses NaN
            raise ValueError(f"MeshConfig.spacing must be 0 (automatic) or in [1, {MAX_CANVAS}] pixels, "
                             f"got {self.spacing}")
        if self.target_vertices < 4:
            raise ValueError(f"target_vertices must be >= 4, got {self.target_vertices}")
        if not 0 < self.min_spacing <= self.max_spacing:
            raise ValueError(f"need 0 < min_spacing <= max_spacing, got {self.min_spacing}, {self.max_spacing}")
        if not 0.0 <= self.support_threshold < 1.0:
            raise ValueError(f"support_threshold must lie in [0,1), got {self.support_threshold}")
        if self.grow < 0 or self.min_component_area < 1:
            raise ValueError(f"grow must be >= 0 and min_component_area >= 1, got {self.grow}, {self.min_component_area}")


@dataclasses.dataclass
class Mesh:
    """A 2-D triangle mesh.

    Attributes:
        vertices: float64 ``[V,2]`` xy pixels.
        triangles: int64 ``[T,3]`` vertex indices, counter-clockwise on screen (positive signed area with y down).
        extra: int64 ``[E]`` vertex index of each extra point given to :func:`build_mesh` (``-1`` when it fell
            outside the kept triangles).
        spacing: the sample spacing used.
        components: int64 ``[V]`` connected-component label of each vertex.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    extra: np.ndarray
    spacing: float
    components: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.components.max()) + 1 if len(self.components) else 0

    def groups(self) -> list[np.ndarray]:
        """Vertex indices of every edge-connected triangle group (see :func:`triangle_groups`)."""
        labels = triangle_groups(self.triangles)
        return [np.unique(self.triangles[labels == g]) for g in range(int(labels.max()) + 1 if len(labels) else 0)]

    def signed_areas(self, vertices: np.ndarray | None = None) -> np.ndarray:
        """Signed area of every triangle for ``vertices`` (default the rest positions); > 0 = not flipped."""
        v = self.vertices if vertices is None else np.asarray(vertices, dtype=np.float64)
        a, b, c = v[self.triangles[:, 0]], v[self.triangles[:, 1]], v[self.triangles[:, 2]]
        return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))

    def edges(self) -> np.ndarray:
        """Unique undirected edges ``[E,2]`` (smaller index first)."""
        t = self.triangles
        e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
        return np.unique(np.sort(e, axis=1), axis=0)


def mask_support(mask: np.ndarray, config: MeshConfig = MeshConfig()) -> np.ndarray:
    """The pixels the mesh must cover: ``mask > support_threshold`` grown by ``config.grow`` pixels, tiny parts
    removed (bool ``[H,W]``)."""
    m = np.nan_to_num(np.asarray(mask, dtype=np.float32), nan=0.0)
    if m.ndim != 2:
        raise ValueError(f"mask must be [H,W], got shape {m.shape}")
    support = (m > config.support_threshold).astype(np.uint8)
    if config.grow > 0 and support.any():
        k = 2 * config.grow + 1
        support = cv2.dilate(support, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if config.min_component_area > 1 and support.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(support, connectivity=8)
        small = np.nonzero(stats[:, cv2.CC_STAT_AREA] < config.min_component_area)[0]
        small = small[small > 0]
        if len(small):
            support[np.isin(labels, small)] = 0
    return support.astype(bool)


def _auto_spacing(area: float, config: MeshConfig) -> float:
    if config.spacing > 0:
        return float(config.spacing)
    return float(np.clip(math.sqrt(max(area, 1.0) / config.target_vertices), config.min_spacing, config.max_spacing))


def _fill_small_holes(support: np.ndarray, min_area: float) -> np.ndarray:
    """Fill background regions enclosed by the support whose area is below ``min_area``."""
    inv = (~support).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    h, w = support.shape
    out = support.copy()
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        if not touches and area < min_area:
            out[labels == i] = True
    return out


def _resample_closed(poly: np.ndarray, spacing: float) -> np.ndarray:
    """Points along the closed polygon ``poly [N,2]``: its corners plus points so no gap exceeds ``spacing``."""
    if len(poly) <= 1:
        return poly.astype(np.float64)
    out = []
    nxt = np.roll(poly, -1, axis=0)
    for a, b in zip(poly.astype(np.float64), nxt.astype(np.float64)):
        length = float(np.hypot(*(b - a)))
        n = max(1, int(math.ceil(length / spacing)))
        t = np.arange(n)[:, None] / n
        out.append(a + t * (b - a))
    return np.concatenate(out)


def _boundary_points(support: np.ndarray, spacing: float) -> np.ndarray:
    contours, _ = cv2.findContours(support.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    eps = max(0.7, 0.08 * spacing)
    pts = []
    for c in contours:
        if len(c) >= 3:
            c = cv2.approxPolyDP(c, eps, True)
        pts.append(_resample_closed(c.reshape(-1, 2), spacing))
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def _interior_points(support: np.ndarray, spacing: float) -> np.ndarray:
    dist = cv2.distanceTransform(np.pad(support, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    h, w = support.shape
    dy = spacing * math.sqrt(3) / 2
    ys = np.arange(dy / 2, h, dy)
    pts = []
    for row, y in enumerate(ys):
        xs = np.arange((spacing / 2) * (1 + row % 2) - spacing / 2, w, spacing) + spacing / 4
        pts.append(np.stack([xs, np.full_like(xs, y)], 1))
    if not pts:
        return np.zeros((0, 2))
    grid = np.concatenate(pts)
    ix = np.clip(np.round(grid[:, 0]).astype(int), 0, w - 1)
    iy = np.clip(np.round(grid[:, 1]).astype(int), 0, h - 1)
    return grid[dist[iy, ix] >= 0.5 * spacing]


def _inside(support: np.ndarray, pts: np.ndarray) -> np.ndarray:
    h, w = support.shape
    ix = np.round(pts[..., 0]).astype(np.int64)
    iy = np.round(pts[..., 1]).astype(np.int64)
    ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    out = np.zeros(ix.shape, dtype=bool)
    out[ok] = support[iy[ok], ix[ok]]
    return out


def build_mesh(
    mask: np.ndarray,
    *,
    config: MeshConfig = MeshConfig(),
    extra_points: np.ndarray | None = None,
    support: np.ndarray | None = None,
) -> Mesh:
    """Triangulate a character's mask.

    Args:
        mask: ``[H,W]`` soft (float in [0,1]) or binary mask of one character.
        config: density and support rules (:class:`MeshConfig`).
        extra_points: ``[E,2]`` xy points that must become vertices (handle positions); they should lie inside
            the support (a point outside it may end up in no kept triangle: its ``Mesh.extra`` entry is ``-1``).
            Samples closer than 0.35 spacing to an extra point are removed to avoid slivers.
        support: precomputed :func:`mask_support` of ``mask`` (bool ``[H,W]``).

    Returns:
        :class:`Mesh`.

    Raises:
        ValueError: the mask has no support (empty, or only parts smaller than ``config.min_component_area``).
    """
    from scipy.spatial import Delaunay

    if support is None:
        support = mask_support(mask, config)
    area = float(support.sum())
    if area == 0:
        raise ValueError("mask is empty (no pixel above the support threshold); nothing to mesh")
    spacing = _auto_spacing(area, config)
    hole_area = config.min_hole_area if config.min_hole_area > 0 else spacing * spacing / 4
    support = _fill_small_holes(support, hole_area)
    boundary = _boundary_points(support, spacing)
    interior = _interior_points(support, spacing)
    extra = np.zeros((0, 2)) if extra_points is None else np.asarray(extra_points, dtype=np.float64).reshape(-1, 2)
    samples = np.concatenate([boundary, interior])
    if len(extra) and len(samples):
        d2 = ((samples[:, None, :] - extra[None, :, :]) ** 2).sum(-1).min(1)
        samples = samples[d2 > (0.35 * spacing) ** 2]
    pts = np.concatenate([extra, samples])
    # merge coincident points (keeps the first: extra points come first)
    key = np.round(pts * 4).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    keep = np.sort(first)
    point_of = np.searchsorted(keep, first[inverse])  # new index of every input point
    pts = pts[keep]
    extra_idx = point_of[: len(extra)] if len(extra) else np.zeros(0, dtype=np.int64)

    tris = np.zeros((0, 3), dtype=np.int64)
    if len(pts) >= 3:
        try:
            tris = Delaunay(pts, qhull_options="Qbb Qc Qz Q12").simplices.astype(np.int64)
        except Exception:  # all points collinear (a straight one-pixel line): no 2-D triangulation exists
            tris = np.zeros((0, 3), dtype=np.int64)
    if len(tris):
        a, b, c = pts[tris[:, 0]], pts[tris[:, 1]], pts[tris[:, 2]]
        probes = np.stack([(a + b + c) / 3, (a + b) / 2, (b + c) / 2, (c + a) / 2], 1)
        ok = _inside(support, probes).all(1)
        signed = 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
        ok &= np.abs(signed) > 1e-6
        ok = _repair_coverage(np.asarray(mask, dtype=np.float32) > config.support_threshold, support, pts, tris, ok,
                              signed)
        tris, signed = tris[ok], signed[ok]
        flip = signed < 0
        tris[flip] = tris[flip][:, [0, 2, 1]]
    if len(tris) == 0:
        raise ValueError(f"mask too thin or small to triangulate ({int(area)} support pixels); grow it or drop it")
    used = np.unique(tris)
    new_index = np.full(len(pts), -1, dtype=np.int64)
    new_index[used] = np.arange(len(used))
    vertices = pts[used]
    tris = new_index[tris]
    extra_idx = np.where(extra_idx >= 0, new_index[np.maximum(extra_idx, 0)], -1) if len(extra_idx) else extra_idx
    components = _components(len(vertices), tris)
    return Mesh(vertices=vertices, triangles=tris, extra=extra_idx.astype(np.int64), spacing=spacing,
                components=components)


def _fill_ids(shape: tuple[int, int], pts: np.ndarray, tris: np.ndarray, ids: np.ndarray) -> np.ndarray:
    buf = np.full(shape, -1, dtype=np.int32)
    p = np.round(pts * 16.0).astype(np.int32)
    for t in ids.tolist():
        cv2.fillConvexPoly(buf, p[tris[t]], t, lineType=cv2.LINE_8, shift=4)
    return buf


def _repair_coverage(core: np.ndarray, support: np.ndarray, pts: np.ndarray, tris: np.ndarray, ok: np.ndarray,
                     signed: np.ndarray) -> np.ndarray:
    """Keep also the rejected triangles (centroid inside the support) that cover mask pixels the kept ones miss:
    the midpoint test may cut a corner of a thin part, and every visible pixel must be on the mesh."""
    covered = _fill_ids(core.shape, pts, tris, np.nonzero(ok)[0]) >= 0
    missing = core & ~covered
    if not missing.any():
        return ok
    centroid = pts[tris].mean(1)
    spare = np.nonzero(~ok & _inside(support, centroid) & (np.abs(signed) > 1e-6))[0]
    if not len(spare):
        return ok
    ids = _fill_ids(core.shape, pts, tris, spare)[missing]
    ok = ok.copy()
    ok[np.unique(ids[ids >= 0])] = True
    return ok


def triangle_groups(tris: np.ndarray) -> np.ndarray:
    """Label of each triangle's edge-connected group (triangles sharing an edge are in one group; two fans that
    touch at a single vertex are two groups, since each can turn about that vertex)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    t = len(tris)
    if t == 0:
        return np.zeros(0, dtype=np.int64)
    e = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(t), 3)
    _, edge_id = np.unique(e, axis=0, return_inverse=True)
    edge_id = edge_id.reshape(-1)
    # triangles that share an edge id are adjacent: connect each to the first owner of the edge
    order = np.argsort(edge_id, kind="stable")
    first = np.full(edge_id.max() + 1, -1, dtype=np.int64)
    first[edge_id[order[::-1]]] = owner[order[::-1]]
    graph = coo_matrix((np.ones(len(owner)), (owner, first[edge_id])), shape=(t, t))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def _components(n: int, tris: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)
