"""Rendering puppet frames: textured-mesh rasterisation and back-to-front compositing over a background plate.

Each character is a texture (the input image premultiplied by the character's soft mask, so its edges keep the
mask's anti-aliasing; where no other instance reaches, that half-transparent edge is un-mixed against the plate,
``a F = I - (1 - a) plate``, so a moved outline keeps its darkness and carries no old background, and the frame
starts there from the background this leaves, so the rest pose still adds up to the input) on its rest mesh. With alpha mattes (``Instances.alphas``, :attr:`Character.matted`) the
texture is the estimated foreground colour premultiplied by the matte (:func:`cartoonseg.matting.unmix`), so hair
strands and anti-aliased outlines move with the character without the old background mixed in, and under their
half-transparent edge the frame starts from the estimated background instead of the input (one estimate for all
characters, ``(I - sum a_k F_k) / (1 - sum a_k)``; the mattes are composed front to back, so each is painted with
the opacity it has over what the mattes in front leave, and the rest pose adds up to the input where two characters
meet too). For a frame, the
deformed mesh is rasterised triangle by triangle into an index buffer (OpenCV, sub-pixel vertices), one body part
(the triangles nearest one bone) at a time, trunk first so limbs pass in front; every covered pixel is mapped back to
its rest position through its triangle's affine map, the texture is sampled bilinearly there, and each part is laid
over the ones before it, so a limb's soft outline crossing another part shows that part, not the background (where
two parts meet, on the same texel, the more opaque sample is kept, so the rest pose is one lookup per pixel).

The background of a frame is the input image, replaced by the plate (the characters inpainted away) where a
character has moved: each rest triangle takes the largest displacement of its corners, the map is grown by the
rig's ``ring`` (the plate's dilation) and turned into a weight that is 0 up to half a pixel of motion (so the sub-pixel
wobble of a part that stays put keeps the input) and reaches 1, smoothly, at 1.5 px. So the rest pose
reproduces the input exactly (up to float rounding of the texture lookup), pixels away from the characters are
never touched, and wherever a character moved away by 1.5 px or more only plate pixels remain, never a ghost of it
(between 0.5 and 1.5 px the uncovered strip blends the input with the plate). Characters are
painted back to front in the rig's ``layer_order`` (the input's occlusion where they touch, else pooled instance
depth when known, else the ground-contact rule),
together with the instances that are not animated (the rig's ``stills``): each is painted at rest, as the input
image over its owned alpha (with mattes: its estimated foreground colours over its matte, as a matted character at
rest), at its place in that order, so a character moving behind a nearer still instance is
hidden by it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch

from ..compositing import background_behind, over_opacity, unmix_over_plate
from ..io import MAX_FRAMES, check_fps
from ..transforms import check_same_aspect
from .rig import Character, PuppetRig, StillLayer, triangle_bones

__all__ = ["PuppetClip", "PuppetRenderer", "animate", "background_plate", "default_frames", "joint_sequences", "render_frames"]


def _to_float_image(image, name: str = "image") -> np.ndarray:
    """float32 numpy ``[H,W,3]`` in [0,1] by :func:`cartoonseg.io.to_float_image` (NaN -> 0; a batch of one is
    unwrapped)."""
    from ..io import to_float_image

    if getattr(image, "ndim", 0) == 4 and image.shape[0] == 1:
        image = image[0]
    try:
        return np.ascontiguousarray(to_float_image(image, nan="zero").numpy())
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


#: PatchMatch patch side of the puppet plate: a character's hole is large next to a 3x3 patch, and small patches let
#: a flat region that borders the hole (sky) grow into it and a cloud the ring touches drip down into the sky, while
#: a 7x7 patch carries a horizon, a hill's slope or a tiled ground across (drawn scenes with a known background:
#: about +1 to +10 dB PSNR in the hole, see tests/test_puppet.py)
PLATE_PATCH_SIZE = 7
#: PatchMatch propagation + random-search rounds per EM iteration for the plate: one round with 7x7 patches costs
#: about 1.5-3x the 3x3 default (two rounds) and is as good as two (the coarse-to-fine EM does the rest)
PLATE_PM_ITERS = 1


def background_plate(image, rig: PuppetRig, *, method: str = "patchmatch", patch_size: int = PLATE_PATCH_SIZE,
                     seed: int = 0, interrupt: Callable[[], None] | None = None) -> np.ndarray:
    """The background with the rig's characters removed (float32 ``[H,W,3]``): :func:`cartoonseg.inpaint.inpaint`
    over the union of their supports grown by ``rig.config.ring``. PatchMatch (the default) runs with
    ``patch_size`` (default :data:`PLATE_PATCH_SIZE`) and :data:`PLATE_PM_ITERS` search rounds, other settings
    as :class:`cartoonseg.inpaint.PatchMatchConfig`; where it has nothing to copy from, :func:`~cartoonseg.inpaint.inpaint`'s
    fallbacks (Telea, flat grey; with a warning) apply. Without characters it is the image itself."""
    from ..inpaint import PatchMatchConfig, fill_method, inpaint, patchmatch_inpaint

    img = _to_float_image(image)
    if img.shape[:2] != tuple(rig.image_size):
        raise ValueError(f"image is {img.shape[1]}x{img.shape[0]} but the rig was built for "
                         f"{rig.image_size[1]}x{rig.image_size[0]}")
    hole = np.zeros(rig.image_size, dtype=bool)
    for ch in rig.characters:
        x0, y0, x1, y1 = ch.box
        hole[y0:y1, x0:x1] |= ch.hole
    if not hole.any():
        return img.copy()
    if fill_method(hole, method=method, patch_size=patch_size) == "patchmatch":
        config = PatchMatchConfig(patch_size=patch_size, min_size=max(PatchMatchConfig.min_size, 2 * patch_size),
                                  pm_iters=PLATE_PM_ITERS)
        out = patchmatch_inpaint(img, hole, patch_size=patch_size, seed=seed, config=config, interrupt=interrupt)
    else:  # Telea, or inpaint's documented fallbacks (with their warning)
        out = inpaint(img, hole, method=method, patch_size=patch_size, seed=seed, interrupt=interrupt)
    return np.asarray(out, dtype=np.float32)


#: farthest a vertex may lie from the raster window (pixels) before its triangle is clipped: OpenCV takes int32
#: coordinates with 4 sub-pixel bits, so a vertex keyed or retargeted millions of pixels away would wrap around
_RASTER_LIMIT = float(2**20)


def _clip_to_box(poly: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Sutherland-Hodgman: the convex polygon ``poly [N,2]`` clipped to the square ``[lo, hi]^2``."""
    for axis in (0, 1):
        for bound, inside in ((lo, lambda v, b: v >= b), (hi, lambda v, b: v <= b)):
            out = []
            for k in range(len(poly)):
                p, q = poly[k], poly[(k + 1) % len(poly)]
                pin, qin = inside(p[axis], bound), inside(q[axis], bound)
                if pin:
                    out.append(p)
                if pin != qin:
                    out.append(p + (q - p) * ((bound - p[axis]) / (q[axis] - p[axis])))
            poly = np.array(out).reshape(-1, 2)
            if not len(poly):
                return poly
    return poly


def _rasterize(vertices: np.ndarray, triangles: np.ndarray, order: np.ndarray, x0: int, y0: int, w: int,
               h: int, empty: int = -1) -> np.ndarray:
    """Triangle index per pixel of the window ``[y0:y0+h, x0:x0+w]`` (``empty`` = none), later triangles on top."""
    buf = np.full((h, w), empty, dtype=np.int32)
    rel = vertices - (x0, y0)
    far = np.abs(rel).max(1) > _RASTER_LIMIT
    pts = np.round(np.clip(rel, -_RASTER_LIMIT, _RASTER_LIMIT) * 16.0).astype(np.int32)
    tri_pts = pts[triangles]
    tri_far = far[triangles].any(1)
    for t in order.tolist():
        if tri_far[t]:  # clipped exactly (the pixels inside the window are the same), not wrapped around
            poly = _clip_to_box(rel[triangles[t]], -_RASTER_LIMIT, _RASTER_LIMIT)
            if len(poly) >= 3:
                cv2.fillConvexPoly(buf, np.round(poly * 16.0).astype(np.int32), t, lineType=cv2.LINE_8, shift=4)
            continue
        cv2.fillConvexPoly(buf, tri_pts[t], t, lineType=cv2.LINE_8, shift=4)
    return buf


def _affine_to(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Per triangle, the affine ``[T,2,3]`` taking its ``src`` vertices to its ``dst`` vertices (zeros -> the
    first dst vertex for degenerate triangles)."""
    s, d = src[triangles], dst[triangles]
    S = np.stack([s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]], -1)  # columns: edge vectors [T,2,2]
    D = np.stack([d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]], -1)
    det = S[:, 0, 0] * S[:, 1, 1] - S[:, 0, 1] * S[:, 1, 0]
    ok = np.abs(det) > 1e-9
    inv = np.zeros_like(S)
    inv[ok, 0, 0] = S[ok, 1, 1] / det[ok]
    inv[ok, 0, 1] = -S[ok, 0, 1] / det[ok]
    inv[ok, 1, 0] = -S[ok, 1, 0] / det[ok]
    inv[ok, 1, 1] = S[ok, 0, 0] / det[ok]
    M = D @ inv
    t = d[:, 0] - np.einsum("tij,tj->ti", M, s[:, 0])
    return np.concatenate([M, t[:, :, None]], -1)


#: a posed triangle whose map back to its rest shape stretches more than this (its largest singular value: it is
#: crushed to under half along some direction) is drawn under the rest of its character
_CRUSHED = 2.0


@dataclasses.dataclass
class _Layer:
    character: Character
    texture: np.ndarray  # float32 [h,w,4]: premultiplied RGB + alpha over character.box
    rest_index: np.ndarray  # int32 [h,w] triangle under each box pixel at rest (T = none)
    parts: list[np.ndarray]  # the draw order split by body part (nearest bone), in drawing order
    part_vertices: list[np.ndarray]  # the mesh vertices of each part's triangles (for its bounding box per frame)
    rest_holes: np.ndarray  # bool [h,w]: box pixels the character encloses at rest but does not cover (alpha <= 0.5)


def _enclosed(solid: np.ndarray) -> np.ndarray:
    """The pixels not in ``solid`` that ``solid`` encloses: not 8-connected to the window's border through pixels
    outside it."""
    free = np.pad(~solid, 1, constant_values=True).astype(np.uint8)
    _, labels = cv2.connectedComponents(free, connectivity=8)
    return (labels != labels[0, 0])[1:-1, 1:-1] & ~solid


def _parts(ch: Character) -> list[np.ndarray]:
    """``ch.draw_order`` split into the triangles of each body part (:attr:`Character.tri_part`, else the bone
    nearest a triangle), in the order in which the parts first appear there (trunk first, limb tips last)."""
    J = ch.skeleton.joints
    bones = [(a, c) for a, c in ch.skeleton.bones if np.hypot(*(J[c] - J[a])) > 1e-6]
    if not bones or len(ch.draw_order) == 0:
        return [ch.draw_order]
    part = ch.tri_part if ch.tri_part is not None else triangle_bones(ch.mesh.vertices, ch.mesh.triangles, J, bones)
    part = part[ch.draw_order]
    _, first = np.unique(part, return_index=True)
    return [ch.draw_order[part == part[i]] for i in sorted(first.tolist())]


@dataclasses.dataclass
class _StillPaint:
    still: StillLayer
    alpha: np.ndarray  # float32 [h,w]: the still instance's owned alpha over still.box
    colour: np.ndarray | None = None  # float32 [h,w,3]: a matted still's foreground colours (None: the base)


class PuppetRenderer:
    """Renders frames of one rig over one image and plate.

    Args:
        image: the input picture ``[H,W,3]`` (float in [0,1], uint8, numpy or torch).
        rig: :class:`PuppetRig` built for this image.
        plate: the background without the characters (the image's aspect ratio, any size; another aspect is
            refused); None = :func:`background_plate` (PatchMatch).
    """

    def __init__(self, image, rig: PuppetRig, plate=None) -> None:
        self.image = _to_float_image(image)
        if self.image.shape[:2] != tuple(rig.image_size):
            raise ValueError(f"image is {self.image.shape[1]}x{self.image.shape[0]} but the rig was built for "
                             f"{rig.image_size[1]}x{rig.image_size[0]}")
        self.plate = background_plate(self.image, rig) if plate is None else _to_float_image(plate, "plate")
        if self.plate.shape != self.image.shape:
            if self.plate.ndim == 3 and self.plate.shape[2] == 3:
                check_same_aspect(self.plate.shape[:2], self.image.shape[:2])  # never stretched over the picture
                self.plate = cv2.resize(self.plate, (self.image.shape[1], self.image.shape[0]),
                                        interpolation=cv2.INTER_LINEAR)
            else:
                raise ValueError(f"plate must be [H,W,3], got shape {self.plate.shape}")
        self.rig = rig
        self._image_planes = np.ascontiguousarray(self.image.transpose(2, 0, 1))
        self._base_planes = self._image_planes  # what a frame starts from (see the matted characters below)
        self._plate_planes = np.ascontiguousarray(self.plate.transpose(2, 0, 1))
        h, w = rig.image_size
        # soft ownership: where masks overlap, the layer painted later (in front) keeps the pixels; still
        # instances take part, so a character behind one does not carry its pixels away
        alphas = []
        for lay in [*rig.characters, *rig.stills]:
            full = np.zeros((h, w), np.float32)
            x0, y0, x1, y1 = lay.box
            full[y0:y1, x0:x1] = lay.alpha
            alphas.append(full)
        n_char = len(rig.characters)
        # the rest raster of each character: a matte is painted only where its rest mesh reaches
        rests = [_rasterize(ch.mesh.vertices, ch.mesh.triangles, ch.draw_order, ch.box[0], ch.box[1],
                            ch.box[2] - ch.box[0], ch.box[3] - ch.box[1], empty=len(ch.mesh.triangles))
                 for ch in rig.characters]
        layers = [*rig.characters, *rig.stills]
        matted = any(lay.matted for lay in layers)
        colours = [self.image[lay.box[1]:lay.box[3], lay.box[0]:lay.box[2]] for lay in layers]
        if matted:
            for i, lay in enumerate(layers):
                x0, y0, x1, y1 = lay.box
                if i < n_char:
                    alphas[i][y0:y1, x0:x1] *= rests[i] < len(lay.mesh.triangles)
                if lay.matted:
                    colours[i] = self._foreground(lay)
        owned = {i: alphas[i].copy() for i in range(len(alphas))}
        front = np.zeros((h, w), np.float32)
        for i in reversed(rig.layer_order):
            if matted and layers[i].matted:
                # mattes are already composed front to back (they sum to at most 1: what each character adds to
                # the pixel); painted back to front with "over", a character's opacity is its matte over what the
                # layers in front leave (a_k / (1 - sum of the front mattes)), so the rest pose adds up to the input
                owned[i] = over_opacity(torch.from_numpy(alphas[i]), torch.from_numpy(front)).numpy()
                front = np.minimum(front + alphas[i], 1.0)
            else:
                owned[i] *= 1.0 - front
                front = np.maximum(front, alphas[i])
        self.stills = []
        for j, st in enumerate(rig.stills):
            x0, y0, x1, y1 = st.box
            self.stills.append(_StillPaint(st, np.ascontiguousarray(owned[n_char + j][y0:y1, x0:x1]),
                                           colours[n_char + j] if st.matted else None))
        if matted:
            self._matted_base(layers, alphas, colours)
        reach = np.zeros((h, w), np.int32)  # how many layers reach each pixel
        for a in alphas:
            reach += a > 0
        self.layers: list[_Layer] = []
        for i, ch in enumerate(rig.characters):
            x0, y0, x1, y1 = ch.box
            a = owned[i][y0:y1, x0:x1]
            tex = np.concatenate([colours[i] * a[..., None], a[..., None]], -1).astype(np.float32)
            if not ch.matted:
                self._unmix_soft_edge(ch, tex, reach[y0:y1, x0:x1] == 1, rests[i] < len(ch.mesh.triangles))
            parts = _parts(ch)
            self.layers.append(_Layer(ch, np.ascontiguousarray(tex), rests[i], parts,
                                      [np.unique(ch.mesh.triangles[p]) for p in parts], _enclosed(tex[..., 3] > 0.5)))

    def _unmix_soft_edge(self, ch: Character, tex: np.ndarray, alone: np.ndarray, on_mesh: np.ndarray) -> None:
        """A soft mask's half-transparent edge (``0 < a < 1``) is a mix of the character (its anti-aliased outline)
        and the background behind it, ``I = a F + (1 - a) B``. The input premultiplied by ``a`` would carry that
        old background along and fade the outline (``a^2 F``) once the character moves. Where this character is
        the only layer (and its rest mesh reaches, so it is painted at rest), its premultiplied colour is un-mixed
        against the plate instead, ``a F = I - (1 - a) plate`` (clipped to ``[0, a]``), and the frame starts there
        from the background that this leaves, ``(I - a F) / (1 - a)`` (the plate where nothing was clipped), so
        the rest pose still adds up to the input (the layer model of :mod:`cartoonseg.compositing`, shared with the
        Ken Burns renderer). ``tex``: the layer's texture over ``ch.box`` (changed in place);
        ``alone``, ``on_mesh``: bool over the box."""
        x0, y0, x1, y1 = ch.box
        a = tex[..., 3]
        edge = alone & on_mesh & (a > 0) & (a < 1)
        if not edge.any():
            return
        ys, xs = np.nonzero(edge)
        ea = torch.from_numpy(a[ys, xs])
        image = torch.from_numpy(self._image_planes[:, y0 + ys, x0 + xs])  # [3,K], channels first
        plate = torch.from_numpy(self._plate_planes[:, y0 + ys, x0 + xs])
        premul = unmix_over_plate(image, plate, [ea], [image])[0]
        tex[ys, xs, :3] = premul.T.numpy()
        if self._base_planes is self._image_planes:
            self._base_planes = self._image_planes.copy()
        self._base_planes[:, y0 + ys, x0 + xs] = background_behind(image, ea, premul).numpy()

    def _foreground(self, ch: Character) -> np.ndarray:
        """A matted character's foreground colours over its box (:func:`cartoonseg.matting.unmix`): the input
        where its matte is 0 or 1, the estimate without the old background where it is fractional."""
        from ..matting import unmix

        x0, y0, x1, y1 = ch.box
        return unmix(self.image[y0:y1, x0:x1], ch.alpha)[0]

    def _matted_base(self, layers: list, alphas: list[np.ndarray], colours: list[np.ndarray]) -> None:
        """What a frame starts from with matted characters: under their half-transparent edges the background
        that the input leaves once their foreground colours are taken out, ``(I - sum a_k F_k) / (1 - sum a_k)``
        (``layers``: the characters and the still instances, ``alphas``: the matte of each on the image, a
        character's where its rest mesh reaches, ``colours``: its foreground colours over its box, changed in
        place). One estimate for all of them, so where two mattes meet (the edge of a character in
        front of another) the rest pose still adds up to the input (up to clipping to [0, 1]), and a moved edge
        shows no old background; elsewhere the input."""
        h, w = self.rig.image_size
        total = np.zeros((h, w), np.float32)
        mixed = np.zeros((3, h, w), np.float32)
        for ch, a, colour in zip(layers, alphas, colours):
            if not ch.matted:
                continue
            x0, y0, x1, y1 = ch.box
            total[y0:y1, x0:x1] += a[y0:y1, x0:x1]
            mixed[:, y0:y1, x0:x1] += a[None, y0:y1, x0:x1] * colour.transpose(2, 0, 1)
        touched = total > 0
        if not touched.any():
            return
        left = np.clip(1.0 - total, 0.0, 1.0)
        base = background_behind(torch.from_numpy(self._image_planes), torch.from_numpy(total),
                                 torch.from_numpy(mixed)).numpy()
        # what the clipped background cannot absorb (mattes that cover a pixel in full, where two characters
        # meet) goes into the foreground colours, in proportion to the mattes; a colour clipped at 0 or 1 passes
        # its share on to the others that still have room (one round per character settles it: the target
        # I - (1 - sum a) base lies in [0, sum a], so it is always reachable)
        target = np.where(touched, self._image_planes - left * base, 0.0)
        fits = [ch.matted for ch in layers]
        for _ in range(len(colours) + 1):
            mixed[:] = 0.0
            up = np.zeros((3, h, w), np.float32)  # matte weight of the colours that can still grow / shrink
            down = np.zeros((3, h, w), np.float32)
            for ch, a, colour, fit in zip(layers, alphas, colours, fits):
                if not fit:
                    continue
                x0, y0, x1, y1 = ch.box
                ab = a[None, y0:y1, x0:x1]
                c = colour.transpose(2, 0, 1)
                mixed[:, y0:y1, x0:x1] += ab * c
                up[:, y0:y1, x0:x1] += ab * (c < 1.0)
                down[:, y0:y1, x0:x1] += ab * (c > 0.0)
            residual = np.where(touched, target - mixed, 0.0)
            if float(np.abs(residual).max(initial=0.0)) < 1e-6:
                break
            room = np.where(residual > 0, up, down)
            step = np.where(room > 1e-6, residual / np.maximum(room, 1e-6), 0.0)
            for ch, a, colour, fit in zip(layers, alphas, colours, fits):
                if not fit:
                    continue
                x0, y0, x1, y1 = ch.box
                st = step[:, y0:y1, x0:x1].transpose(1, 2, 0)
                free = np.where(st > 0, colour < 1.0, colour > 0.0) & (a[y0:y1, x0:x1] > 0)[..., None]
                colour += st * free
                np.clip(colour, 0.0, 1.0, out=colour)
        self._base_planes = np.ascontiguousarray(np.where(touched & (left > 0), base, self._image_planes),
                                                 dtype=np.float32)

    def render(self, poses: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One frame for the skeleton poses ``poses[i] [J_i,2]`` of every character (rig order).

        Returns:
            ``(frame float32 [H,W,3], mask float32 [H,W])``: the composite and the union of the characters' alpha,
            less where a nearer still instance covers them.
        """
        if len(poses) != len(self.layers):
            raise ValueError(f"need one pose per character ({len(self.layers)}), got {len(poses)}")
        h, w = self.rig.image_size
        frame = self._base_planes.copy()  # planar [3,H,W]: per-channel updates stay contiguous (much faster)
        mask = np.zeros((h, w), np.float32)
        deformed = [layer.character.deform(pose) for layer, pose in zip(self.layers, poses)]
        for layer, verts in zip(self.layers, deformed):
            self._reveal_plate(frame, layer, verts)
        n_char = len(self.layers)
        for k in self.rig.layer_order:
            if k < n_char:
                self._paint(frame, mask, self.layers[k], deformed[k])
            else:
                self._paint_still(frame, mask, self.stills[k - n_char])
        return cv2.merge([frame[0], frame[1], frame[2]]), mask

    def _paint_still(self, frame: np.ndarray, mask: np.ndarray, paint: _StillPaint) -> None:
        """The still instance at rest over its owned alpha ``a``: ``frame (1 - a) + C a``, written
        ``frame + a (C - frame)`` so that pixels no character changed stay bit-exact. ``C`` is a matted still's
        foreground colours (its matte is its alpha, as a matted character's at rest), else what a frame starts
        from: the input, or under a matted character's fringe the colour behind that fringe (:meth:`_matted_base`;
        the input there would count the matted character twice)."""
        x0, y0, x1, y1 = paint.still.box
        a = paint.alpha
        for c in range(3):
            plane = frame[c, y0:y1, x0:x1]
            colour = self._base_planes[c, y0:y1, x0:x1] if paint.colour is None else paint.colour[..., c]
            plane += a * (colour - plane)
        mask[y0:y1, x0:x1] *= 1.0 - a

    def _reveal_plate(self, frame: np.ndarray, layer: _Layer, verts: np.ndarray) -> None:
        ch = layer.character
        moved = np.hypot(*(verts - ch.mesh.vertices).T)
        if float(moved.max(initial=0.0)) < 1e-6:  # at rest (up to solver rounding): the input stays
            return
        x0, y0, x1, y1 = ch.box
        # per rest triangle the largest motion of its corners (index T: no triangle, no motion)
        tri_moved = np.append(moved[ch.mesh.triangles].max(1), 0.0).astype(np.float32)
        disp = tri_moved[layer.rest_index]
        r = self.rig.config.ring + 1
        disp = cv2.dilate(disp, np.ones((2 * r + 1, 2 * r + 1), np.uint8))  # square: separable, fast
        # no plate below half a pixel of motion (solver wobble of parts that stay put: the input stays, so the
        # plate's fill never shows round a still head), full plate from 1.5 px, smooth in between
        weight = np.clip(disp - 0.5, 0.0, 1.0)
        weight *= weight * (3.0 - 2.0 * weight)
        weight *= ch.hole
        for c in range(3):
            plane = frame[c, y0:y1, x0:x1]
            plane += weight * (self._plate_planes[c, y0:y1, x0:x1] - plane)

    def _paint(self, frame: np.ndarray, mask: np.ndarray, layer: _Layer, verts: np.ndarray) -> None:
        """The character's texture on its deformed mesh, over ``frame``. Body parts (:func:`_parts`) are
        rasterised one by one, each over the ones before it (premultiplied "over"), so where a limb passes in
        front of another part its soft outline (and any transparent texel its triangles carry, such as the gap
        between two legs) shows that part behind it, not the background. A pixel that a part maps back to the same
        texel (within one pixel) as the part below it, the seam where two parts meet, keeps the more opaque of the
        two samples instead (a fold at a joint opens no hole), so no texel is painted twice and the rest pose is the
        single texture lookup per pixel. Triangles the pose crushes (:data:`_CRUSHED`) go first, under all parts."""
        ch = layer.character
        h, w = self.rig.image_size
        x0 = max(0, int(np.floor(verts[:, 0].min())) - 1)
        y0 = max(0, int(np.floor(verts[:, 1].min())) - 1)
        x1 = min(w, int(np.ceil(verts[:, 0].max())) + 2)
        y1 = min(h, int(np.ceil(verts[:, 1].max())) + 2)
        if x0 >= x1 or y0 >= y1:
            return  # moved entirely off the picture
        n_tri = len(ch.mesh.triangles)  # the extra row n_tri maps uncovered pixels outside the texture (alpha 0)
        aff = _affine_to(verts, ch.mesh.vertices, ch.mesh.triangles)
        aff[:, 0, 2] -= ch.box[0]
        aff[:, 1, 2] -= ch.box[1]
        coef = np.concatenate([aff.reshape(-1, 6), [[0, 0, -10, 0, 0, -10]]]).astype(np.float32).T  # [6, T+1]
        # how much each triangle is crushed: the largest stretch of its posed-to-rest map (1 at rest; a triangle
        # collapsed to a line or a point, whose map _affine_to leaves zero, the most)
        crush = np.linalg.norm(aff[:, :, :2], ord=2, axis=(1, 2))
        crush[~aff[:, :, :2].any(axis=(1, 2))] = np.inf
        acc = np.zeros((y1 - y0, x1 - x0, 4), np.float32)  # the character so far, premultiplied
        texel = np.full((y1 - y0, x1 - x0, 2), np.inf, np.float32)  # texture position of the top sample
        # a triangle the pose crushes (the inside of a bend: the armpit of a raised arm) samples its texture
        # several texels per pixel, and the fill's fringe round a sliver extrapolates its map: drawn in its part's
        # turn, it put specks of the arm's outline over the skin of the raised arm and of the armpit. The crushed
        # triangles of every part are drawn first, most crushed first, under the rest of the character
        groups = list(zip(layer.parts, layer.part_vertices))
        crushed = np.nonzero(crush > _CRUSHED)[0]
        if len(crushed):
            first = crushed[np.argsort(-crush[crushed], kind="stable")]
            groups = [(first, np.unique(ch.mesh.triangles[first]))] + [
                (part[crush[part] <= _CRUSHED], part_vertices) for part, part_vertices in groups]
        for part, part_vertices in groups:
            if not len(part):
                continue
            pv = verts[part_vertices]
            px0 = max(x0, int(np.floor(pv[:, 0].min())) - 1)
            py0 = max(y0, int(np.floor(pv[:, 1].min())) - 1)
            px1 = min(x1, int(np.ceil(pv[:, 0].max())) + 2)
            py1 = min(y1, int(np.ceil(pv[:, 1].max())) + 2)
            if px0 >= px1 or py0 >= py1:
                continue
            tri = _rasterize(verts, ch.mesh.triangles, part, px0, py0, px1 - px0, py1 - py0, empty=n_tri)
            covered = tri < n_tri
            if not covered.any():
                continue
            xs = np.arange(px0, px1, dtype=np.float32)[None, :]
            ys = np.arange(py0, py1, dtype=np.float32)[:, None]
            maps = []
            for k in (0, 3):  # map = a * x + b * y + c with (a, b, c) of each pixel's triangle, built in place
                m = np.take(coef[k], tri)
                m *= xs
                t = np.take(coef[k + 1], tri)
                t *= ys
                m += t
                m += np.take(coef[k + 2], tri)
                maps.append(m)
            map_x, map_y = maps
            sample = cv2.remap(layer.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(0.0, 0.0, 0.0, 0.0))
            under = acc[py0 - y0:py1 - y0, px0 - x0:px1 - x0]
            at = texel[py0 - y0:py1 - y0, px0 - x0:px1 - x0]
            same = np.hypot(map_x - at[..., 0], map_y - at[..., 1]) < 1.0  # inf (nothing yet): False
            over = covered & ~same
            under[over] = sample[over] + (1.0 - sample[over][:, 3:]) * under[over]
            seam = covered & same & (sample[..., 3] >= under[..., 3])
            under[seam] = sample[seam]
            at[covered, 0] = map_x[covered]
            at[covered, 1] = map_y[covered]
        if float(np.abs(verts - ch.mesh.vertices).max(initial=0.0)) >= 1e-6:
            self._close_folds(layer, acc, texel)
        alpha = acc[..., 3]
        keep = 1.0 - alpha
        for c in range(3):
            plane = frame[c, y0:y1, x0:x1]
            plane *= keep
            plane += acc[..., c]
        np.maximum(mask[y0:y1, x0:x1], alpha, out=mask[y0:y1, x0:x1])


    @staticmethod
    def _close_folds(layer: _Layer, acc: np.ndarray, texel: np.ndarray) -> None:
        """Fill the specks a deformation opens inside a character: where a joint bends far (a 90-degree kick),
        the mesh between two parts folds or stretches, and a few pixels enclosed by the posed character are left
        uncovered or show the stretched transparent fringe of its outline, so the plate showed through at the hip.
        An enclosed see-through patch (``acc`` alpha <= 0.5, the character all round it) is such a speck when none
        of its pixels maps back into a hole the character has at rest (a gap between an arm and the body stays a
        gap) and it is no larger than a mesh cell (a spacing squared); it takes the colour of the nearest opaque
        pixel of the character. ``acc`` (premultiplied, the character's window) is changed in place."""
        solid = acc[..., 3] > 0.5
        holes = _enclosed(solid)
        if not holes.any():
            return
        n, labels, stats, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=8)
        hh, hw = layer.rest_holes.shape
        tx = np.round(texel[..., 0]).astype(np.float64)
        ty = np.round(texel[..., 1]).astype(np.float64)
        on = np.isfinite(tx) & np.isfinite(ty) & (tx >= 0) & (ty >= 0) & (tx < hw) & (ty < hh)
        genuine = np.zeros(labels.shape, bool)
        genuine[on] = layer.rest_holes[ty[on].astype(np.intp), tx[on].astype(np.intp)]
        bad = np.zeros(n, bool)
        bad[np.unique(labels[genuine & holes])] = True
        bad |= stats[:, cv2.CC_STAT_AREA] > max(1.0, layer.character.mesh.spacing ** 2)
        bad[0] = True
        fill = ~bad[labels] & holes
        if not fill.any():
            return
        from scipy.ndimage import distance_transform_edt

        _, (iy, ix) = distance_transform_edt(~solid, return_indices=True)
        acc[fill] = acc[iy[fill], ix[fill]]


def joint_sequences(rig: PuppetRig, motion, n_frames: int, fps: float) -> list[np.ndarray]:
    """Skeleton poses ``[F,J,2]`` of every character of ``rig`` for ``motion``.

    ``motion``: a :class:`~cartoonseg.puppet.motion.PresetMotion` or
    :class:`~cartoonseg.puppet.motion.KeyframeMotion` (applies to every character / by instance index), a
    :class:`~cartoonseg.puppet.motion.RetargetMotion`, a list of them (person tracks: the characters, left to
    right by their root joint, take the tracks in turn, cycling when there are fewer tracks), or a dict
    ``{instance index: motion}`` giving each character its own (characters left out stay at rest).
    """
    from .motion import KeyframeMotion, PresetMotion, RetargetMotion

    if not 1 <= n_frames <= MAX_FRAMES:
        raise ValueError(f"frames must lie in [1, {MAX_FRAMES}], got {n_frames}")
    check_fps(fps)
    out: list[np.ndarray] = []
    if isinstance(motion, dict):
        rigged = {ch.instance for ch in rig.characters}
        unknown = set(motion) - rigged
        if unknown:
            raise ValueError(f"motions given for instances {sorted(unknown)} that are not rigged (rigged: {sorted(rigged)})")
        for ch in rig.characters:
            single = PuppetRig(characters=[ch], image_size=rig.image_size, order=[0], config=rig.config)
            own = motion.get(ch.instance)
            out.append(joint_sequences(single, own, n_frames, fps)[0] if own is not None
                       else np.repeat(ch.skeleton.joints[None], n_frames, 0))
        return out
    if isinstance(motion, (list, tuple)):
        if not motion or not all(isinstance(m, RetargetMotion) for m in motion):
            raise TypeError("a motion list must hold RetargetMotion tracks")
        by_x = sorted(range(len(rig.characters)),
                      key=lambda i: rig.characters[i].skeleton.joints[rig.characters[i].skeleton.root, 0])
        track_of = {ci: motion[k % len(motion)] for k, ci in enumerate(by_x)}
        return [track_of[i].poses(ch.skeleton, n_frames, fps, character=ch.instance)
                for i, ch in enumerate(rig.characters)]
    for ch in rig.characters:
        if isinstance(motion, PresetMotion):
            out.append(motion.poses(ch.skeleton, n_frames, fps, character=ch.instance, base=ch.base, height=ch.height))
        elif isinstance(motion, (KeyframeMotion, RetargetMotion)):
            out.append(motion.poses(ch.skeleton, n_frames, fps, character=ch.instance))
        else:
            raise TypeError(f"unknown motion type {type(motion).__name__}")
    if isinstance(motion, KeyframeMotion):
        unknown = set(motion.keys) - {ch.instance for ch in rig.characters}
        if unknown:
            raise ValueError(f"keyframes name instances {sorted(unknown)} that are not rigged "
                             f"(rigged: {[ch.instance for ch in rig.characters]})")
    return out


def default_frames(motion, fps: float) -> int:
    """The natural length of a motion at ``fps`` (reference length, last keyframe, or a preset's loop)."""
    check_fps(fps)
    if isinstance(motion, dict):
        if not motion:
            raise ValueError("the motion dict is empty")
        return max(default_frames(m, fps) for m in motion.values())
    first = motion[0] if isinstance(motion, (list, tuple)) else motion
    return int(first.default_frames(fps))


def render_frames(image, rig: PuppetRig, motion, *, frames: int | None = None, fps: float = 12.0, plate=None,
                  callback: Callable[[int, int], None] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frame [H,W,3], mask [H,W])`` float32 per frame (streaming: for long clips and file writers).
    ``callback(done, total)`` runs after every frame (raise from it to cancel)."""
    n = frames if frames else default_frames(motion, fps)
    renderer = PuppetRenderer(image, rig, plate)
    sequences = joint_sequences(rig, motion, n, fps)
    for f in range(n):
        yield renderer.render([seq[f] for seq in sequences])
        if callback is not None:
            callback(f + 1, n)


@dataclasses.dataclass
class PuppetClip:
    """Output of :func:`animate`: ``frames [T,H,W,3]`` and ``masks [T,H,W]`` (torch float32) and the fps."""

    frames: object
    masks: object
    fps: float


def animate(image, rig: PuppetRig, motion, *, frames: int | None = None, fps: float = 12.0, plate=None,
            callback: Callable[[int, int], None] | None = None) -> PuppetClip:
    """Render a whole clip into memory (see :func:`render_frames`)."""
    import torch

    out_f, out_m = [], []
    for frame, mask in render_frames(image, rig, motion, frames=frames, fps=fps, plate=plate, callback=callback):
        out_f.append(torch.from_numpy(frame))
        out_m.append(torch.from_numpy(mask))
    return PuppetClip(frames=torch.stack(out_f), masks=torch.stack(out_m), fps=float(fps))
