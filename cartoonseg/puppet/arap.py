"""As-rigid-as-possible shape manipulation (Igarashi, Moscovich and Hughes, SIGGRAPH 2005), the deformation that
Animated Drawings (Smith et al. 2023) drives with its skeleton.

Two least-squares steps over a triangle mesh whose handle vertices are fixed to given positions:

1. *Similarity step*: every triangle ``(i, j, k)`` stores, for each of its three vertices, the local coordinates
   ``(x, y)`` of that vertex in the frame of the opposite edge: ``v_k = v_i + x (v_j - v_i) + y R90 (v_j - v_i)``.
   Minimising the squared violation of all these relations over the free vertices allows each triangle rotation
   and uniform scale (the quadratic form ``G``, size ``2V``; x and y are coupled by the rotation).
2. *Scale adjustment*: each triangle of step 1 is replaced by the congruent copy of its rest triangle that fits it
   best (2-D Procrustes: rotation only), and the free vertices are solved so that every edge vector matches its
   fitted triangle's (a graph Laplacian ``L``, size ``V``, the same for x and y).

Handles are eliminated as hard constraints (the paper's formulation), so both systems reduce to their free-vertex
blocks, which depend only on the mesh and on which vertices are handles: :class:`ARAPDeformer` factorises them
once (scipy SuperLU) and a frame costs two back-substitutions plus a vectorised fit. Moving all handles by one rigid
transform moves the whole mesh rigidly (zero energy in both steps); every edge-connected part of the mesh needs at
least two handles (one does not fix the similarity of step 1; parts touching at one vertex turn about it), which
:func:`cartoonseg.puppet.rig.build_character` guarantees.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ARAPDeformer"]


class ARAPDeformer:
    """Two-step ARAP solver for one mesh and one set of handle vertices, factorised at construction.

    Args:
        vertices: rest positions ``[V,2]`` (xy).
        triangles: ``[T,3]`` vertex indices.
        handles: ``[K]`` distinct vertex indices whose positions are given per frame.

    Raises:
        ValueError: bad shapes, repeated or out-of-range handles, or a connected part of the mesh with fewer than
            two handles (its position would be undetermined).
    """

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray, handles: np.ndarray) -> None:
        from scipy.sparse import coo_matrix
        from scipy.sparse.linalg import splu

        rest = np.asarray(vertices, dtype=np.float64)
        tris = np.asarray(triangles, dtype=np.int64)
        handles = np.asarray(handles, dtype=np.int64).reshape(-1)
        if rest.ndim != 2 or rest.shape[1] != 2 or tris.ndim != 2 or tris.shape[1] != 3 or len(tris) == 0:
            raise ValueError(f"need vertices [V,2] and triangles [T,3] with T > 0, got {rest.shape} and {tris.shape}")
        n = len(rest)
        if tris.min() < 0 or tris.max() >= n:
            raise ValueError(f"triangle indices must lie in [0, {n})")
        if len(handles) == 0 or handles.min() < 0 or handles.max() >= n or len(np.unique(handles)) != len(handles):
            raise ValueError(f"handles must be distinct vertex indices in [0, {n}), got {handles.tolist()}")
        from .mesh import triangle_groups

        edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
        used = np.zeros(n, dtype=bool)
        used[tris.ravel()] = True
        is_h = np.zeros(n, dtype=bool)
        is_h[handles] = True
        labels = triangle_groups(tris)
        bad = sum(1 for g in range(labels.max() + 1) if is_h[np.unique(tris[labels == g])].sum() < 2)
        if bad:
            raise ValueError(f"{bad} part(s) of the mesh (triangles joined by edges) have fewer than two handles; "
                             "every part needs two to be positioned")
        if not used.all():
            raise ValueError(f"{int((~used).sum())} vertices belong to no triangle")

        self.rest = rest
        self.triangles = tris
        self.handles = handles
        is_handle = np.zeros(n, dtype=bool)
        is_handle[handles] = True
        self.free = np.nonzero(~is_handle)[0]

        # ---- step 1: similarity-invariant energy G (2V x 2V, coordinates interleaved x0,y0,x1,y1,...)
        rows, cols, vals = [], [], []
        for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
            i, j, k = tris[:, a], tris[:, b], tris[:, c]
            d = rest[j] - rest[i]
            r = rest[k] - rest[i]
            dd = (d**2).sum(1)
            x = (r * d).sum(1) / dd
            y = (r[:, 0] * d[:, 1] - r[:, 1] * d[:, 0]) / dd  # r . R90 d with R90 d = (d_y, -d_x)
            # e = v_k - v_i - x (v_j - v_i) - y R90 (v_j - v_i), as two rows over (vix, viy, vjx, vjy, vkx, vky)
            ex = np.stack([x - 1, y, -x, -y, np.ones_like(x), np.zeros_like(x)], 1)
            ey = np.stack([-y, x - 1, y, -x, np.zeros_like(x), np.ones_like(x)], 1)
            idx = np.stack([2 * i, 2 * i + 1, 2 * j, 2 * j + 1, 2 * k, 2 * k + 1], 1)
            for e in (ex, ey):
                rows.append(np.repeat(idx, 6, axis=1).ravel())
                cols.append(np.tile(idx, (1, 6)).ravel())
                vals.append((e[:, :, None] * e[:, None, :]).ravel())
        g = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(2 * n, 2 * n)).tocsc()
        free2 = np.stack([2 * self.free, 2 * self.free + 1], 1).ravel()
        hand2 = np.stack([2 * handles, 2 * handles + 1], 1).ravel()
        self._free2, self._hand2 = free2, hand2
        self._g_fh = g[free2][:, hand2].tocsc()

        # ---- step 2: edge-vector fitting, the graph Laplacian of the triangle edges (V x V, x and y separately)
        self._ei = edges[:, 0]
        self._ej = edges[:, 1]
        ones = np.ones(len(edges))
        lap = coo_matrix((np.concatenate([ones, ones, -ones, -ones]),
                          (np.concatenate([self._ei, self._ej, self._ei, self._ej]),
                           np.concatenate([self._ei, self._ej, self._ej, self._ei]))), shape=(n, n)).tocsc()
        self._l_fh = lap[self.free][:, handles].tocsc()
        self._rest_tri = rest[tris] - rest[tris].mean(1, keepdims=True)  # [T,3,2] centred rest triangles
        if len(self.free):
            self._g_lu = splu(g[free2][:, free2].tocsc())
            self._l_lu = splu(lap[self.free][:, self.free].tocsc())

    @property
    def n_vertices(self) -> int:
        return len(self.rest)

    def similarity_step(self, targets: np.ndarray) -> np.ndarray:
        """Step 1 only: vertex positions ``[V,2]`` allowing each triangle rotation and uniform scale."""
        targets = self._check(targets)
        out = self.rest.copy()
        out[self.handles] = targets
        if len(self.free):
            rhs = -(self._g_fh @ targets.reshape(-1))
            out[self.free] = self._g_lu.solve(rhs).reshape(-1, 2)
        return out

    def deform(self, targets: np.ndarray) -> np.ndarray:
        """Vertex positions ``[V,2]`` with the handles at ``targets [K,2]`` (both steps)."""
        step1 = self.similarity_step(targets)
        if not len(self.free):
            return step1
        # Procrustes fit of each rest triangle to its step-1 triangle (rotation only: removes the scale)
        q = step1[self.triangles]
        qc = q.mean(1, keepdims=True)
        q0 = q - qc
        p = self._rest_tri
        cross = (p[..., 0] * q0[..., 1] - p[..., 1] * q0[..., 0]).sum(1)
        dot = (p * q0).sum((1, 2))
        theta = np.arctan2(cross, dot)
        cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
        fitted = np.stack([cos * p[..., 0] - sin * p[..., 1], sin * p[..., 0] + cos * p[..., 1]], -1) + qc
        # edge targets: every triangle's three edges, summed into the right-hand side D^T d
        n = self.n_vertices
        b = np.zeros((n, 2))
        for a, c in ((0, 1), (1, 2), (2, 0)):
            d = fitted[:, c] - fitted[:, a]
            np.add.at(b, self.triangles[:, c], d)
            np.subtract.at(b, self.triangles[:, a], d)
        out = step1
        out[self.handles] = targets
        rhs = b[self.free] - self._l_fh @ targets
        out[self.free] = self._l_lu.solve(np.ascontiguousarray(rhs))
        return out

    def _check(self, targets) -> np.ndarray:
        t = np.asarray(targets, dtype=np.float64)
        if t.shape != (len(self.handles), 2):
            raise ValueError(f"targets must be [{len(self.handles)},2], got shape {t.shape}")
        if not np.isfinite(t).all():
            raise ValueError("handle targets must be finite")
        return t
