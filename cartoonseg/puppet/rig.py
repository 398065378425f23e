"""Rigging: each character instance becomes a mesh bound to a skeleton, with its ARAP system factorised once.

Skeleton sources, per character, in this order: user handles (JSON), pose keypoints (``POSE_KEYPOINT``, matched to
instances by containment), else the automatic skeleton from the mask (:func:`~cartoonseg.puppet.skeleton.auto_skeleton`).

Handles (the mesh vertices ARAP pins) are bound to bones: every joint inside the mask (a joint just outside is
snapped onto the nearest mask pixel), ``bone_samples`` points along every bone inside the mask (along a limb bone
that starts inside a trunk, along its part outside it; none on one the trunk takes in whole), and, for mesh parts
that would otherwise have fewer than two handles (a detached hand, a hair strand), the part's vertex nearest the
skeleton and the one farthest from it; and
the vertices of the mask's thick parts (a trunk, a head), outline included but less an outer band next to a limb,
bound to the nearest bone inside the same part, so those parts keep their shape. A handle bound to bone ``(a, c)``
with local coordinates ``(u, v)`` sits at ``J_a + u (J_c - J_a) + v R90 (J_c - J_a)`` in every pose, so it follows
the bone rigidly when lengths are kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..config import MAX_CANVAS
from ..io import MAX_PIXELS
from ..ops import MAX_BACKGROUND_DILATE
from ..structures import EXTRA_DEPTH
from .arap import ARAPDeformer
from .mesh import Mesh, MeshConfig, build_mesh, mask_support
from .skeleton import (
    PersonPose,
    Skeleton,
    auto_skeleton,
    match_people,
    parse_handles,
    parse_pose_keypoint,
    skeleton_from_points,
)

__all__ = ["MAX_RING", "Character", "PuppetRig", "RigConfig", "StillLayer", "build_character", "build_rig",
           "matte_cover"]

#: Largest :attr:`RigConfig.ring` (pixels): the plate's dilation, as :func:`cartoonseg.ops.background_mask` allows.
MAX_RING = MAX_BACKGROUND_DILATE


@dataclasses.dataclass(frozen=True)
class RigConfig:
    """How characters are rigged.

    Attributes:
        mesh: mesh density and support rules.
        bone_samples: handles placed along each bone (inside the mask) besides its joints; they keep limbs straight.
        snap_radius: a joint outside the mask within this many pixels is snapped onto it; farther joints drive bone
            angles but pin nothing (0 = three mesh spacings).
        ring: pixels around each character whose background is replaced by the plate once it moves (use the plate's
            inpainting dilation; 5 as in the Ken Burns plate), 0..:data:`MAX_RING` (512).
        auto_branches: most limbs the automatic skeleton looks for.
        min_area: instances with fewer support pixels are not rigged (they stay still, with a note).
    """

    mesh: MeshConfig = MeshConfig()
    bone_samples: int = 1
    snap_radius: float = 0.0
    ring: int = 5
    auto_branches: int = 6
    min_area: int = 8

    def __post_init__(self) -> None:
        # `not lo <= x <= hi` also refuses NaN
        for name, lo, hi in (("bone_samples", 0, 64), ("snap_radius", 0.0, float(MAX_CANVAS)), ("ring", 0, MAX_RING),
                             ("auto_branches", 1, 64), ("min_area", 1, MAX_PIXELS)):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"RigConfig.{name} must lie in [{lo:g}, {hi:g}], got {getattr(self, name)}")


def _r90(d: np.ndarray) -> np.ndarray:
    return np.stack([-d[..., 1], d[..., 0]], -1)


@dataclasses.dataclass
class Character:
    """One rigged character (all coordinates in image pixels).

    Attributes:
        instance: index of the instance in the rig's input.
        skeleton: rest skeleton.
        mesh: rest mesh.
        deformer: factorised ARAP system of the mesh with its handle vertices.
        bind_vertex, bind_a, bind_c, bind_uv: handle bindings (a handle vertex may have several; its target is
            their mean); ``deformer.handles`` are the distinct vertices.
        alpha: float32 soft mask ``[H,W]`` cropped to ``box`` (x0, y0, x1, y1), the character's texture alpha; the
            alpha matte instead when the instances carry ``alphas`` (``matted``).
        box: integer crop of the support grown by the ring (image-clipped).
        hole: bool ``[h,w]`` crop: the support grown by the ring (where the plate may show once it moves), less
            the pixels of instances that are not animated (outside this character's own mask).
        draw_order: triangle indices in drawing order (trunk first, limb tips last, so limbs pass in front).
        tri_part: per triangle, the body part it belongs to (an index into the skeleton's bones of nonzero
            length, parents first): the bone nearest its centroid, a bone of the same thick part for a triangle
            inside a trunk or head (:func:`_triangle_parts`); None (a character built by hand) = the nearest bone.
        base: ``(x, y)`` bottom centre of the mesh (pivot of sway / breathe / bounce); height: its vertical extent.
        depth: pooled instance depth (larger = nearer) when known; mask_box: tight xyxy box of the mask.
        matted: ``alpha`` is an alpha matte: the renderer cuts the character out with its estimated foreground
            colours (:func:`cartoonseg.matting.unmix`), not the input's, so a moved edge carries no old background.
    """

    instance: int
    skeleton: Skeleton
    mesh: Mesh
    deformer: ARAPDeformer
    bind_vertex: np.ndarray
    bind_a: np.ndarray
    bind_c: np.ndarray
    bind_uv: np.ndarray
    alpha: np.ndarray
    box: tuple[int, int, int, int]
    hole: np.ndarray
    draw_order: np.ndarray
    base: np.ndarray
    height: float
    depth: float | None = None
    mask_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    matted: bool = False
    tri_part: np.ndarray | None = None

    def handle_targets(self, joints: np.ndarray) -> np.ndarray:
        """Positions ``[K,2]`` of the deformer's handles for a skeleton pose ``joints [J,2]``."""
        j = np.asarray(joints, dtype=np.float64)
        a, c = j[self.bind_a], j[self.bind_c]
        d = c - a
        pts = a + self.bind_uv[:, :1] * d + self.bind_uv[:, 1:] * _r90(d)
        # deformer.handles is sorted (np.unique), so searchsorted finds each binding's handle slot
        slot = np.searchsorted(self.deformer.handles, self.bind_vertex)
        k = len(self.deformer.handles)
        counts = np.bincount(slot, minlength=k)
        return np.stack([np.bincount(slot, pts[:, 0], k), np.bincount(slot, pts[:, 1], k)], 1) / counts[:, None]

    def deform(self, joints: np.ndarray) -> np.ndarray:
        """Mesh vertex positions ``[V,2]`` for a skeleton pose ``joints [J,2]``."""
        return self.deformer.deform(self.handle_targets(joints))

    def describe(self) -> dict:
        return {"instance": self.instance, "skeleton": self.skeleton.source, "joints": len(self.skeleton.names),
                "vertices": len(self.mesh.vertices), "triangles": len(self.mesh.triangles),
                "handles": len(self.deformer.handles), "spacing": round(self.mesh.spacing, 2)}


@dataclasses.dataclass
class StillLayer:
    """One instance that is not animated (not selected, or too small to rig) but still occludes: the renderer paints
    it at rest, at its place in the rig's :attr:`PuppetRig.layer_order`, so a character moving behind it stays
    hidden there (all coordinates in image pixels).

    Attributes:
        instance: index of the instance in the rig's input.
        alpha: float32 soft mask cropped to ``box`` (x0, y0, x1, y1), the tight box of its non-zero pixels; the
            alpha matte instead when the instances carry ``alphas`` (``matted``).
        box: integer crop of the mask (of the mask and the matte when matted).
        mask_box: tight xyxy box of the mask (alpha > 0.5, else > 0), for the ground-contact paint order.
        depth: pooled instance depth (larger = nearer) when known.
        matted: ``alpha`` is an alpha matte: the renderer paints it with its estimated foreground colours, as a
            matted character at rest, so the mattes of still and moving characters add up to the input together.
    """

    instance: int
    alpha: np.ndarray
    box: tuple[int, int, int, int]
    mask_box: tuple[float, float, float, float]
    depth: float | None = None
    matted: bool = False

    def describe(self) -> dict:
        return {"instance": self.instance, "still": True, "box": list(self.box),
                "note": "not animated; painted at rest in the paint order, so it hides characters behind it"}


@dataclasses.dataclass
class PuppetRig:
    """Rigged characters of one image (the ComfyUI type ``CARTOONSEG_PUPPET``), with the instances that stay still.

    Attributes:
        characters: rigged characters, in instance order.
        image_size: ``(H, W)``.
        order: indices into ``characters`` only, back to front: ``layer_order`` without the still instances.
        config: the :class:`RigConfig` used.
        notes: what was decided on the way (unmatched people, skipped instances), for logs and the CLI.
        stills: the non-empty instances that are not animated (:class:`StillLayer`), in instance order.
        layer_order: one back-to-front order over characters and still instances together: index ``k`` is
            ``characters[k]`` when ``k < len(characters)``, else ``stills[k - len(characters)]``. Layers that touch
            are ordered as the input shows them (the one hidden in part goes behind, :func:`_paint_order`); the
            rest from pooled depth when every one of them has it, else the ground-contact rule of
            :func:`cartoonseg.style.regions.paint_order` (lower box bottom = nearer). The renderer paints in this
            order, so a still instance nearer than a moving character hides it. None (a rig built by hand) = the
            still instances behind every character, then ``order``.
    """

    characters: list[Character]
    image_size: tuple[int, int]
    order: list[int]
    config: RigConfig = RigConfig()
    notes: list[str] = dataclasses.field(default_factory=list)
    stills: list[StillLayer] = dataclasses.field(default_factory=list)
    layer_order: list[int] | None = None

    def __post_init__(self) -> None:
        c, s = len(self.characters), len(self.stills)
        if sorted(self.order) != list(range(c)):
            raise ValueError(f"order must list each of the {c} characters once, got {self.order}")
        if self.layer_order is None:
            self.layer_order = [c + j for j in range(s)] + list(self.order)
        if sorted(self.layer_order) != list(range(c + s)):
            raise ValueError(f"layer_order must list each of the {c} characters and {s} still instances once, "
                             f"got {self.layer_order}")

    def __len__(self) -> int:
        return len(self.characters)

    def describe(self) -> list[dict]:
        """One dict per character, then one per still instance (those hide the characters behind them)."""
        return [c.describe() for c in self.characters] + [s.describe() for s in self.stills]


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points ``p [N,2]`` to segment ``a-b``."""
    d = b - a
    dd = float(d @ d)
    t = np.clip(((p - a) @ d) / dd, 0, 1) if dd > 0 else np.zeros(len(p))
    return np.hypot(*(p - (a + t[:, None] * d)).T)


def triangle_bones(vertices: np.ndarray, triangles: np.ndarray, joints: np.ndarray,
                   bones: list[tuple[int, int]]) -> np.ndarray:
    """Per triangle ``[T]``, the index into ``bones`` (``(a, c)`` joint pairs of nonzero length) of the bone nearest
    its centroid: the part of the body it belongs to (drawing order, and the renderer's layers)."""
    centroids = vertices[triangles].mean(1)
    return np.argmin(np.stack([_segment_distance(centroids, joints[a], joints[c]) for a, c in bones], 1), 1)


def _bind(point: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Local (u, v) of ``point`` in the frame of bone ``a -> c``."""
    d = c - a
    dd = float(d @ d)
    r = point - a
    return np.array([(r @ d) / dd, (r @ _r90(d)) / dd])


def _snap(support: np.ndarray, xy: np.ndarray, radius: float) -> np.ndarray | None:
    """``xy`` if inside ``support``, else the nearest support pixel within ``radius``, else None."""
    h, w = support.shape
    ix, iy = int(round(xy[0])), int(round(xy[1]))
    if 0 <= ix < w and 0 <= iy < h and support[iy, ix]:
        return np.asarray(xy, dtype=np.float64)
    x0, x1 = max(0, int(xy[0] - radius) - 1), min(w, int(xy[0] + radius) + 2)
    y0, y1 = max(0, int(xy[1] - radius) - 1), min(h, int(xy[1] + radius) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    ys, xs = np.nonzero(support[y0:y1, x0:x1])
    if not len(xs):
        return None
    pts = np.stack([xs + x0, ys + y0], 1).astype(np.float64)
    d = np.hypot(*(pts - xy).T)
    k = int(np.argmin(d))
    return pts[k] if d[k] <= radius else None


def build_character(mask: np.ndarray, skeleton: Skeleton | None, *, instance: int = 0,
                    config: RigConfig = RigConfig(), support: np.ndarray | None = None,
                    matte: np.ndarray | None = None) -> Character:
    """Rig one character from its soft mask ``[H,W]`` and a skeleton (None: automatic). ``matte``: its alpha matte
    ``[H,W]`` (``Instances.alphas``), then the texture alpha; the support (mesh and hole) covers every pixel either
    reaches (:func:`matte_cover`)."""
    mask = np.nan_to_num(np.asarray(mask, dtype=np.float32), nan=0.0).clip(0, 1)
    if matte is not None:
        matte = np.nan_to_num(np.asarray(matte, dtype=np.float32), nan=0.0).clip(0, 1)
        if matte.shape != mask.shape:
            raise ValueError(f"instance {instance}: the matte is {matte.shape}, the mask {mask.shape}")
    if support is None:
        support = mask_support(mask if matte is None else matte_cover(mask, matte), config.mesh)
    if not support.any():
        raise ValueError(f"instance {instance}: the mask is empty; nothing to rig")
    if skeleton is None:
        skeleton = auto_skeleton(support, max_branches=config.auto_branches)
    area = float(support.sum())
    from .mesh import _auto_spacing

    spacing = _auto_spacing(area, config.mesh)
    snap = config.snap_radius if config.snap_radius > 0 else 3 * spacing
    J = skeleton.joints
    bones = [(a, c) for a, c in skeleton.bones if np.hypot(*(J[c] - J[a])) > 1e-6]
    if not bones:
        raise ValueError(f"instance {instance}: every bone of the skeleton has zero length")
    bone_of_joint = {}
    for a, c in bones:
        bone_of_joint.setdefault(c, (a, c))
        bone_of_joint.setdefault(a, (a, c))
    parts = _thick_parts(support, J, bones, skeleton)
    points, binds = [], []  # candidate handle positions and their (a, c, uv)
    for j in range(len(J)):
        if j not in bone_of_joint:
            continue
        p = _snap(support, J[j], snap)
        if p is None:
            continue
        a, c = bone_of_joint[j]
        points.append(p)
        binds.append((a, c, _bind(p, J[a], J[c])))
    for b, (a, c) in enumerate(bones):
        span = _free_span(parts, b, J[a], J[c], support)
        if span is None:
            continue  # a limb bone that the thick part took in whole: its joints pin it, a sample would pin the part
        t0, t1 = span
        for k in range(1, config.bone_samples + 1):
            t = t0 + (t1 - t0) * k / (config.bone_samples + 1)
            p = J[a] + t * (J[c] - J[a])
            ix, iy = int(round(p[0])), int(round(p[1]))
            if not (0 <= iy < support.shape[0] and 0 <= ix < support.shape[1] and support[iy, ix]):
                continue
            if points and np.min(np.hypot(*(np.array(points) - p).T)) < 0.5 * spacing:
                continue
            points.append(p)
            binds.append((a, c, np.array([t, 0.0])))
    mesh_cfg = dataclasses.replace(config.mesh, spacing=spacing)
    mesh = build_mesh(mask, config=mesh_cfg, extra_points=np.array(points).reshape(-1, 2), support=support)
    bind_vertex, bind_a, bind_c, bind_uv = [], [], [], []
    for vi, (a, c, uv) in zip(mesh.extra.tolist(), binds):
        if vi >= 0:
            bind_vertex.append(vi)
            bind_a.append(a)
            bind_c.append(c)
            bind_uv.append(_bind(mesh.vertices[vi], J[a], J[c]))  # exact vertex position (points may merge)
    seg_d = np.stack([_segment_distance(mesh.vertices, J[a], J[c]) for a, c in bones], 1)  # [V, B]
    for v, b in _thick_part_bindings(parts, support, mesh.vertices, seg_d, spacing, set(bind_vertex),
                                     _head_side(skeleton, bones, mesh.vertices)):
        a, c = bones[b]
        bind_vertex.append(v)
        bind_a.append(a)
        bind_c.append(c)
        bind_uv.append(_bind(mesh.vertices[v], J[a], J[c]))
    # every edge-connected part of the mesh needs two handles: add followers bound to the nearest bone
    nearest_bone = np.argmin(seg_d, 1)
    near_d = seg_d[np.arange(len(mesh.vertices)), nearest_bone]
    have = set(bind_vertex)
    for members in mesh.groups():
        pinned = [v for v in members if v in have]
        want = 2 - len(set(pinned))
        if want <= 0:
            continue
        chosen = list(dict.fromkeys(pinned))
        if not chosen:
            chosen.append(int(members[np.argmin(near_d[members])]))
        while len(chosen) < 2:
            dist = np.min(np.stack([np.hypot(*(mesh.vertices[members] - mesh.vertices[v]).T) for v in chosen]), 0)
            chosen.append(int(members[np.argmax(dist)]))
        for v in chosen:
            if v in have:
                continue
            a, c = bones[nearest_bone[v]]
            bind_vertex.append(v)
            bind_a.append(a)
            bind_c.append(c)
            bind_uv.append(_bind(mesh.vertices[v], J[a], J[c]))
            have.add(v)
    bind_vertex_a = np.array(bind_vertex, dtype=np.int64)
    handles = np.unique(bind_vertex_a)
    deformer = ARAPDeformer(mesh.vertices, mesh.triangles, handles)
    # drawing order: triangles near deeper bones (limb ends) last
    depth = skeleton.depth()
    tri_bone = _triangle_parts(parts, mesh.vertices, mesh.triangles, J, bones)
    tri_depth = np.array([depth[bones[b][1]] for b in tri_bone])
    draw_order = np.argsort(tri_depth, kind="stable")
    h, w = support.shape
    ys, xs = np.nonzero(support)
    r = config.ring
    x0, y0 = max(0, int(xs.min()) - r - 1), max(0, int(ys.min()) - r - 1)
    x1, y1 = min(w, int(xs.max()) + r + 2), min(h, int(ys.max()) + r + 2)
    hole = support[y0:y1, x0:x1].astype(np.uint8)
    if r > 0:
        import cv2

        hole = cv2.dilate(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    v = mesh.vertices
    base = np.array([0.5 * (v[:, 0].min() + v[:, 0].max()), v[:, 1].max()])
    binary = mask > 0.5
    bys, bxs = np.nonzero(binary) if binary.any() else (ys, xs)
    return Character(
        instance=instance, skeleton=skeleton, mesh=mesh, deformer=deformer, bind_vertex=bind_vertex_a,
        bind_a=np.array(bind_a, dtype=np.int64), bind_c=np.array(bind_c, dtype=np.int64),
        bind_uv=np.array(bind_uv, dtype=np.float64).reshape(-1, 2),
        alpha=(mask if matte is None else matte)[y0:y1, x0:x1].copy(), matted=matte is not None,
        box=(x0, y0, x1, y1), hole=hole.astype(bool), draw_order=draw_order, tri_part=tri_bone, base=base,
        height=float(np.ptp(v[:, 1])) or 1.0,
        mask_box=(float(bxs.min()), float(bys.min()), float(bxs.max() + 1), float(bys.max() + 1)),
    )


@dataclasses.dataclass
class _ThickParts:
    """The thick parts of a support (a trunk, a head): ``labels`` (int32 ``[H,W]``) numbers the connected pieces of
    the support opened by a disc of 1.5 times the limbs' half-width (``radius``; grown, up to twice that, while a
    hand's or foot's bone stays pinned to a piece: :func:`_thick_parts_in`); ``pinned`` is where a mesh
    vertex is bound to its piece's bones: the piece and its outline pixels, less an outer band (half the disc
    radius) where that band lies within half the disc radius of a limb or join (the support outside the
    pieces); ``bone_label [B]`` is the piece holding each bone's midpoint in its core (the piece less its outer
    band), unless it reaches out of the piece into a limb (an upper arm whose midpoint the opening took in) or
    ends in an elbow, wrist, knee or ankle (:func:`_limb_joint`); 0 = none: a limb bone."""

    labels: np.ndarray
    pinned: np.ndarray
    radius: float
    bone_label: np.ndarray


def _thick_parts(support: np.ndarray, J: np.ndarray, bones: list[tuple[int, int]], skeleton: Skeleton
                 ) -> _ThickParts | None:
    """The thick parts of ``support`` (:class:`_ThickParts`); None when there are none (a stick figure, a blob
    with no limb, limbs under two pixels wide). Worked out on the support's box grown by 4 px (everything lies
    within 3 px of the support), so a small character on a large picture costs what its box does."""
    ys, xs = np.nonzero(support)
    h, w = support.shape
    x0, y0 = max(0, int(xs.min()) - 4), max(0, int(ys.min()) - 4)
    x1, y1 = min(w, int(xs.max()) + 5), min(h, int(ys.max()) + 5)
    parts = _thick_parts_in(np.ascontiguousarray(support[y0:y1, x0:x1]), J - [x0, y0], bones, skeleton)
    if parts is None:
        return None
    labels, pinned = np.zeros((h, w), np.int32), np.zeros((h, w), np.int32)
    labels[y0:y1, x0:x1] = parts.labels
    pinned[y0:y1, x0:x1] = parts.pinned
    return dataclasses.replace(parts, labels=labels, pinned=pinned)


def _thick_parts_in(support: np.ndarray, J: np.ndarray, bones: list[tuple[int, int]], skeleton: Skeleton
                    ) -> _ThickParts | None:
    from scipy.ndimage import distance_transform_edt

    h, w = support.shape
    kids = skeleton.children
    depth = distance_transform_edt(np.pad(support, 1))[1:-1, 1:-1]
    tips = [depth[c] for a, b in bones if not kids[b] and (c := _cell(0.5 * (J[a] + J[b]), h, w)) is not None]
    tips = [d for d in tips if d > 0]
    if not tips:
        return None
    radius = 1.5 * float(np.median(tips))
    if radius < 2.0:
        return None
    # a hand's or foot's bone (a leaf bone into a wrist or ankle) lies in a limb: where the disc leaves it pinned to
    # a thick part, the disc was too small to part that limb from the part it is drawn against (a small figure: the
    # fixed outline and fringe pixels fatten its arms, an arm along the trunk's side left a blob the disc fitted in,
    # and the whole arm was pinned to the trunk), so the disc grows until it parts them. The automatic skeleton's
    # forearm and shin lie wholly outside the trunk (the limb starts where it leaves the trunk, its middle joint
    # halfway to the tip), so the whole bone must be free; a hand-given elbow may sit in the armpit, so there only
    # the hand's half is checked
    t = np.linspace(0.0 if skeleton.source == "auto" else 0.5, 1.0, 9)
    ends = [J[a] + s * (J[b] - J[a]) for a, b in bones if not kids[b] and _limb_joint(skeleton.names[b]) for s in t]
    ends = [c for p in ends if (c := _cell(p, h, w)) is not None and support[c]]
    first = None
    for step in range(_DISC_GROWTH_STEPS + 1):
        parts = _open_parts(support, J, bones, skeleton, radius * (1.0 + step / _DISC_GROWTH_STEPS))
        if parts is None:
            break
        first = first or parts
        if not any(parts.pinned[c] for c in ends):
            return parts
    return first


#: the opening's disc grows in this many steps up to twice its size while a hand or foot is pinned to a thick part
#: (:func:`_thick_parts_in`)
_DISC_GROWTH_STEPS = 8


def _open_parts(support: np.ndarray, J: np.ndarray, bones: list[tuple[int, int]], skeleton: Skeleton,
                radius: float) -> _ThickParts | None:
    """:class:`_ThickParts` of ``support`` opened by a disc of ``radius``; None when nothing thick remains."""
    import cv2
    from scipy.ndimage import distance_transform_edt

    h, w = support.shape
    k = 2 * int(np.ceil(radius)) + 1
    opened = cv2.morphologyEx(support.astype(np.uint8), cv2.MORPH_OPEN,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    count, labels = cv2.connectedComponents(opened, connectivity=8)
    if count < 2:
        return None
    # the part's outer band (half the disc) stays free next to a limb, so a limb bending there eases the outline
    # instead of stretching the triangles between a pinned edge and the limb into a spike; elsewhere the band and
    # the outline are pinned too, so a limb moving does not drag the part's free band along (a thigh kicking from a
    # hip inside the trunk pulled the trunk's lower flank and hem after it)
    kb = 2 * int(np.ceil(0.5 * radius)) + 1
    core = labels * (cv2.erode(opened, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kb, kb))) > 0)
    bone_label = np.array([core[c] if (c := _cell(0.5 * (J[a] + J[b]), h, w)) is not None else 0 for a, b in bones])
    # a bone that reaches out of its piece into a limb (its far joint outside every piece, and no bone of a piece
    # beyond it) is a limb's, wherever its midpoint lies: an upper arm hanging close to the trunk has its midpoint
    # in the trunk's core once the opening fills the armpit, and the trunk's vertices bound to it followed a raised
    # arm (the shirt's side was carried off); a neck joint in the join between trunk and head keeps its bones
    mid_label = bone_label.copy()
    for k, (a, b) in enumerate(bones):
        c = _cell(J[b], h, w)
        if mid_label[k] and (c is None or labels[c] == 0) and not any(
                mid_label[q] for q, (a2, _) in enumerate(bones) if a2 == b):
            bone_label[k] = 0
        # a bone into an elbow, wrist, knee or ankle is a limb's by its name, wherever its joints lie: a hand-given
        # (POSE_KEYPOINT) elbow sits on the arm's axis a little out of the trunk, inside the armpit the opening
        # fills, so the upper arm counted as the trunk's and a raised arm carried the shirt's whole side off
        if _limb_joint(skeleton.names[b]):
            bone_label[k] = 0
    limb = support & (cv2.dilate(opened, np.ones((5, 5), np.uint8)) == 0)  # limbs and joins, 2 px off the parts
    limb = cv2.morphologyEx(limb.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0  # no specks
    # each pixel within 3 px of a piece (the mesh's outline runs on the support grown by a pixel) takes its label
    off, (iy, ix) = distance_transform_edt(labels == 0, return_indices=True)
    near = np.where(off <= 3, labels[iy, ix], 0)
    far_from_limb = distance_transform_edt(~limb) > 0.5 * radius if limb.any() else np.ones((h, w), bool)
    pinned = np.where(far_from_limb, near, core).astype(np.int32)
    return _ThickParts(labels=labels, pinned=pinned, radius=radius, bone_label=bone_label)


#: joints that end a limb's bone in the OpenPose layout (and the automatic skeleton's names): the bones into them
#: are never a thick part's
_LIMB_JOINTS = ("elbow", "wrist", "knee", "ankle")


def _limb_joint(name: str) -> bool:
    """Whether ``name`` is an elbow, wrist, knee or ankle (``r_`` / ``l_`` and a ``_2``... suffix allowed)."""
    import re

    return re.fullmatch(r"(?:[rl]_)?(" + "|".join(_LIMB_JOINTS) + r")(?:_[2-9]\d*)?", name) is not None


def _cell(p: np.ndarray, h: int, w: int) -> tuple[int, int] | None:
    ix, iy = int(round(float(p[0]))), int(round(float(p[1])))
    return (iy, ix) if 0 <= iy < h and 0 <= ix < w else None


def _free_span(parts: _ThickParts | None, b: int, a_xy: np.ndarray, c_xy: np.ndarray, support: np.ndarray
               ) -> tuple[float, float] | None:
    """The span ``(t0, t1)`` of bone ``b`` (from ``a_xy`` to ``c_xy``) that its samples are spread over: the whole
    bone, unless the bone is a limb's (its midpoint in no thick part's core) and starts or ends inside a thick
    part: then the part of it outside every thick part, where the limb is drawn. A thigh whose hip sits inside the
    trunk has its midpoint near the trunk's lower edge, and a handle there, moving with the thigh, dragged the
    trunk's lower flank along in a kick; the handle belongs on the visible leg. None (no samples) when such a limb
    bone lies inside the thick parts wherever it is inside the support: a hand-given shoulder inside the trunk and
    an elbow just past its outline leave the upper arm along the trunk's flank, the opening takes it in whole (at
    large scales), and its midpoint sample sat on the trunk's outline, so a raised arm carried a strip of the
    shirt's flank up with it (5 to 13 px at u = 2); the shoulder and elbow handles still drive the arm."""
    if parts is None or parts.bone_label[b] > 0:
        return 0.0, 1.0
    h, w = support.shape
    n = max(2, int(np.ceil(np.hypot(*(c_xy - a_xy)))) + 1)
    t = np.linspace(0.0, 1.0, n)
    cells = [_cell(a_xy + s * (c_xy - a_xy), h, w) for s in t]
    limb = np.array([c is not None and support[c] and parts.labels[c] == 0 for c in cells])
    inside = np.array([c is not None and parts.labels[c] > 0 for c in cells])
    if not inside.any():
        return 0.0, 1.0
    if not limb.any():
        return None
    k = np.nonzero(limb)[0]
    return float(t[k[0]]), float(t[k[-1]])


def _head_side(skeleton: Skeleton, bones: list[tuple[int, int]], vertices: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(head_bone [B], above [V])``: which of ``bones`` turn with the head (:attr:`Skeleton.head`: the bone into
    it and every bone below it, what a nod turns), and which vertices lie above the neck joint (the head's parent
    joint: they project onto the bone into the head past that joint). None without a head bone."""
    head = skeleton.head
    if head is None or skeleton.parents[head] < 0:
        return None
    neck = skeleton.parents[head]
    below = set(skeleton.subtree(head))
    head_bone = np.array([c in below for _, c in bones])
    J = skeleton.joints
    axis = J[head] - J[neck]
    if not head_bone.any() or not axis.any():
        return None
    return head_bone, (vertices - J[neck]) @ axis > 0.0


def _thick_part_bindings(parts: _ThickParts | None, support: np.ndarray, vertices: np.ndarray, seg_d: np.ndarray,
                         spacing: float, taken: set[int], head: tuple[np.ndarray, np.ndarray] | None = None
                         ) -> list[tuple[int, int]]:
    """``(vertex, bone index)`` pairs that pin the thick parts of the mask (a trunk, a head) to their own bones.

    With handles only at joints and bone midpoints, a raised arm drags the free trunk vertices next to it and the
    trunk's outline swells, and a head whose joints stay still wobbles by a pixel. A thick part is a connected
    piece of the support opened by a disc of 1.5 times the limbs' half-width (the median depth at the midpoints of
    the tip bones), so limbs and the narrow joins between parts fall away (:func:`_thick_parts`); each of its mesh
    vertices, its outline included, is bound to the nearest bone whose midpoint lies in the same piece, and also to
    the second nearest when that one is almost as near (within one mesh spacing: the band where the part bends
    between two bones follows the mean of both). That band was left free once, and the trunk's flank below a
    raised arm (about as near the shoulder bone as the spine) was dragged out by the arm, a spike of the shirt.
    The head is the exception (``head``: :func:`_head_side`): a vertex nearest a head bone and above the neck
    joint is bound to the head alone. A jaw wider than the neck lies within a spacing of the trunk's or a
    shoulder's bone, and with the mean of both it followed half a nod (1-2 px off); now the head turns rigidly
    about the neck joint, and the blend stays below that joint, where the neck bends.
    Limbs, joins and the piece's outer band (half the disc radius) next to them stay free for ARAP to bend."""
    if parts is None:
        return []
    h, w = support.shape
    vi = np.clip(np.round(vertices).astype(np.int64), 0, [w - 1, h - 1])
    vertex_label = parts.pinned[vi[:, 1], vi[:, 0]]
    out = []
    for v in np.nonzero(vertex_label > 0)[0].tolist():
        if v in taken:
            continue
        own = np.nonzero(parts.bone_label == vertex_label[v])[0]
        if not len(own):
            continue
        d = seg_d[v, own]
        order = np.argsort(d)
        first = int(own[order[0]])
        out.append((v, first))
        if len(own) > 1 and d[order[1]] - d[order[0]] < spacing:
            second = int(own[order[1]])
            if head is not None and head[0][first] and not head[0][second] and head[1][v]:
                continue  # the head above the neck joint: its own bone alone (it turns rigidly in a nod)
            out.append((v, second))  # the bend band between two bones: the mean of both
    return out


def _triangle_parts(parts: _ThickParts | None, vertices: np.ndarray, triangles: np.ndarray, J: np.ndarray,
                    bones: list[tuple[int, int]]) -> np.ndarray:
    """Per triangle, its body part (an index into ``bones``): the nearest bone (:func:`triangle_bones`), but for a
    triangle inside a thick part the nearest bone of that part (when it has one), so the trunk's triangles under
    the hip are the trunk's, not the thigh's: the renderer paints them with the trunk, and the thigh, drawn after
    it, passes in front of the trunk from where the leg leaves it."""
    tri = triangle_bones(vertices, triangles, J, bones)
    if parts is None or not len(triangles):
        return tri
    h, w = parts.labels.shape
    centroids = vertices[triangles].mean(1)
    ci = np.clip(np.round(centroids).astype(np.int64), 0, [w - 1, h - 1])
    label = parts.labels[ci[:, 1], ci[:, 0]]
    for piece in np.unique(label[label > 0]).tolist():
        own = np.nonzero(parts.bone_label == piece)[0]
        sel = np.nonzero((label == piece) & (parts.bone_label[tri] != piece))[0]
        if not len(own) or not len(sel):
            continue
        d = np.stack([_segment_distance(centroids[sel], J[bones[b][0]], J[bones[b][1]]) for b in own], 1)
        tri[sel] = own[np.argmin(d, 1)]
    return tri


def matte_cover(mask: np.ndarray, matte: np.ndarray) -> np.ndarray:
    """What a matted character covers, for its support: its soft mask, and 1 wherever its alpha matte reaches
    (``> MATTE_SUPPORT``), so the mesh and the plate's hole hold every pixel the character touches, a faint hair
    strand past the mask included. That support is grown by a pixel: the mesh's outline is a polygon through
    the support's boundary pixels, which cuts off corners of a thin or jagged edge, and a matte pixel the rest mesh
    does not reach would neither move with the character nor leave its place."""
    import cv2

    from ..structures import MATTE_SUPPORT

    reach = cv2.dilate((matte > MATTE_SUPPORT).astype(np.uint8), np.ones((3, 3), np.uint8))
    return np.maximum(mask, reach.astype(np.float32))


def _as_masks(instances) -> tuple[np.ndarray, list | None, np.ndarray | None]:
    from ..structures import Instances

    if isinstance(instances, Instances):
        masks = instances.masks.detach().float().cpu().numpy()
        depth = instances.extras.get(EXTRA_DEPTH)
        mattes = None if instances.alphas is None else instances.alphas.detach().float().cpu().numpy()
        return masks, (list(depth) if depth is not None else None), mattes
    import torch

    m = instances.detach().float().cpu().numpy() if isinstance(instances, torch.Tensor) else np.asarray(instances, np.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"masks must be Instances or an array [N,H,W], got shape {m.shape}")
    return m.astype(np.float32), None, None


def build_rig(
    instances,
    *,
    poses=None,
    handles=None,
    select: Sequence[int] | None = None,
    config: RigConfig = RigConfig(),
    callback=None,
) -> PuppetRig:
    """Rig the characters of one image.

    Args:
        instances: :class:`cartoonseg.Instances` (soft masks; ``extras["depth"]`` orders the characters when
            present; alpha mattes, ``alphas``, when present are the characters' texture alpha, see
            :func:`build_character`) or soft masks ``[N,H,W]``.
        poses: ``POSE_KEYPOINT`` (dict or list of frames; the first frame is used) or parsed
            ``list[PersonPose]``; people are matched to instances by containment. Unmatched instances, and people
            with fewer than two joints inside, fall back to the automatic skeleton (recorded in ``notes``).
        handles: user handles JSON (see :func:`cartoonseg.puppet.skeleton.parse_handles`); they win over poses.
        select: instance indices to animate (default all); the others stay still and untouched, and occlude:
            they become :attr:`PuppetRig.stills`, painted at rest at their place in the paint order, so a
            character moving behind a nearer still instance is hidden by it.
            Explicitly selected instances must be non-empty; with the default, empty or tiny masks are skipped
            with a note.
        config: :class:`RigConfig`.
        callback: ``callback(done, total)`` after each character (progress / cancel).
    """
    masks, depth, mattes = _as_masks(instances)
    n, h, w = masks.shape
    if h == 0 or w == 0:
        raise ValueError(f"masks are empty: shape {masks.shape}")
    notes: list[str] = []
    explicit = select is not None
    if select is None:
        select = list(range(n))
    for i in select:
        if not -n <= int(i) < n:
            raise ValueError(f"instance index {i} out of range for {n} instances")
    select = [int(i) % n for i in select]  # negative indices count from the end
    if len(set(select)) != len(select):
        raise ValueError(f"instance indices repeat: {select}")
    supports = {i: mask_support(masks[i] if mattes is None else matte_cover(masks[i], mattes[i]), config.mesh)
                for i in select}
    chosen = []
    for i in select:
        area = int(supports[i].sum())
        if area < config.min_area:
            if explicit:
                raise ValueError(f"instance {i} has {'an empty mask' if area == 0 else f'only {area} mask pixels'}; "
                                 "it cannot be rigged (leave it out of the selection)")
            notes.append(f"instance {i}: {'empty mask' if area == 0 else f'{area} px'} - not animated")
            continue
        chosen.append(i)
    skeletons: dict[int, Skeleton] = {}
    if handles is not None:
        for inst, sk in parse_handles(handles, image_size=(h, w)).items():
            if not 0 <= inst < n:
                raise ValueError(f"handles name instance {inst}, but there are {n} instances")
            if inst in chosen:
                skeletons[inst] = sk
            else:
                notes.append(f"handles for instance {inst} ignored: not selected")
    if poses is not None:
        people = poses
        if not (isinstance(poses, list) and all(isinstance(p, PersonPose) for p in poses)):
            frames = parse_pose_keypoint(poses, image_size=(h, w))
            people = frames[0] if frames else []
        free = [i for i in chosen if i not in skeletons]
        matches = match_people(people, np.stack([supports[i] for i in free]) if free else np.zeros((0, h, w), bool))
        matched_people = set()
        for k, p in matches.items():
            inst = free[k]
            inside = {name: xy for name, xy in people[p].points.items()}
            if len(inside) >= 2:
                skeletons[inst] = skeleton_from_points(inside, source="pose")
                matched_people.add(p)
        for p in range(len(people)):
            if p not in matched_people:
                notes.append(f"pose person {p}: no joint inside any selected mask - ignored")
    characters = []
    for k, i in enumerate(chosen):
        sk = skeletons.get(i)
        ch = build_character(masks[i], sk, instance=i, config=config, support=supports[i],
                             matte=None if mattes is None else mattes[i])
        if sk is None:
            notes.append(f"instance {i}: automatic skeleton ({len(ch.skeleton.names)} joints)")
        ch.depth = _known_depth(depth, i)
        characters.append(ch)
        if callback is not None:
            callback(k + 1, len(chosen))
    still = [i for i in range(n) if i not in chosen]
    if still:  # the ring around a moving character never uncovers a neighbour that stays still
        others = (masks[still] > 0.5).any(0)
        for ch in characters:
            x0, y0, x1, y1 = ch.box
            own = masks[ch.instance][y0:y1, x0:x1] > 0.5
            if mattes is not None:
                from ..structures import MATTE_SUPPORT

                own |= mattes[ch.instance][y0:y1, x0:x1] > MATTE_SUPPORT
            ch.hole &= ~(others[y0:y1, x0:x1] & ~own)
    stills = [layer for i in still
              if (layer := _still_layer(masks[i], i, depth, None if mattes is None else mattes[i])) is not None]
    if characters and stills:
        notes.append(f"still instances {[s.instance for s in stills]}: painted at rest in the paint order "
                     "(they hide characters moving behind them)")
    layer_order = _paint_order([*characters, *stills])
    order = [k for k in layer_order if k < len(characters)]
    return PuppetRig(characters=characters, image_size=(h, w), order=order, config=config, notes=notes,
                     stills=stills, layer_order=layer_order)


def _known_depth(depth: list | None, i: int) -> float | None:
    if depth is not None and i < len(depth) and depth[i] is not None and np.isfinite(float(depth[i])):
        return float(depth[i])
    return None


def _still_layer(mask: np.ndarray, instance: int, depth: list | None, matte: np.ndarray | None = None
                 ) -> StillLayer | None:
    """The occluder layer of a still instance (None when its mask, and its alpha matte when given, are empty)."""
    mask = np.nan_to_num(np.asarray(mask, dtype=np.float32), nan=0.0).clip(0, 1)
    if matte is not None:
        matte = np.nan_to_num(np.asarray(matte, dtype=np.float32), nan=0.0).clip(0, 1)
    ys, xs = np.nonzero(mask > 0 if matte is None else (mask > 0) | (matte > 0))
    if not len(xs):
        return None
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    binary = mask > 0.5
    bys, bxs = np.nonzero(binary) if binary.any() else (ys, xs)
    alpha = (mask if matte is None else matte)[y0:y1, x0:x1].copy()
    return StillLayer(instance=instance, alpha=alpha, box=(x0, y0, x1, y1),
                      mask_box=(float(bxs.min()), float(bys.min()), float(bxs.max() + 1), float(bys.max() + 1)),
                      depth=_known_depth(depth, instance), matted=matte is not None)


def _paint_order(layers: list) -> list[int]:
    """Back to front over characters and still layers (anything with ``mask_box``, ``alpha``, ``box`` and
    ``depth``). Two layers that touch in the input are ordered as the input shows them
    (:func:`cartoonseg.occlusion.in_front`, the one home of that decision: the one more confident where the masks
    overlap, else the one whose outline runs on unbroken where they meet is in front), whatever their depth or
    ground line: that is what the picture says where they overlap, the only place their order shows, while pooled depth is a mean over each mask and the ground-contact rule only guesses (two
    figures on one ground line went front-first by their areas, and the hidden one walked over the one hiding it).
    The rest, and touching layers the cue cannot order (masks that overlap in full), follow pooled depth when every
    layer has it, else the ground-contact rule (lower box bottom = nearer): the ``"auto"`` order of
    :func:`cartoonseg.style.regions.paint_order`, the one home of these rules: its ``rule_order`` on the layers'
    boxes and areas, then :func:`cartoonseg.occlusion.occlusion_order` on their windows."""
    from ..occlusion import occlusion_order
    from ..style.regions import rule_order

    if not layers:
        return []
    base = rule_order([c.mask_box for c in layers], [float(c.alpha.sum()) for c in layers], [c.depth for c in layers])
    return occlusion_order(base, [(c.alpha, c.box) for c in layers])
