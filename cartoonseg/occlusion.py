"""Which of two touching or overlapping instances is in front, from their masks alone: the one home of that pairwise
decision (:func:`in_front`) and of the order it gives (:func:`occlusion_order`), used by the alpha mattes'
front-to-back consistency (:func:`cartoonseg.matting.occlusion_order`), style editing's ``auto`` paint order
(:func:`cartoonseg.style.regions.paint_order`) and the puppet's layer order.

Where the two masks overlap (both > 0.5), the one clearly more confident there is in front (mean soft mask higher
by more than :data:`CONFIDENCE_GAP`): a segmenter's mask of the back instance spills over the part it cannot see
only weakly. Masks that only meet (or overlap with equal confidence) are read by one of two cues (``seam``):

* ``"junctions"`` (:func:`occlusion`; style editing and the puppet, whose layers are drawn figures): where the two
  masks and the background meet, the front one's outline runs on unbroken and the hidden one's stops at a corner
  (a T-junction); masks that overlap in full (amodal, both drawn whole) read 0, left to depth or the ground line;
* ``"shape"`` (:func:`_wraps_around`; the mattes' front-to-back order, whose masks are the segmenter's blurred
  soft masks of large characters meeting along a seam): the one that wraps around the seam is behind.

Neither seam cue serves both kinds of input (the evaluation, both orders of each pair; right / undecided / wrong;
the junction column before the junctions were read at the masks' common 0.5 level, centred on their corners and
weighted by how clearly they read: on a rebuilt set of 468 drawn pairs, 3 scales, 3 ground-line shifts, that change
took sigma 0.7 from 810 / 98 / 28 to 864 / 48 / 24 and sigma 1.5 from 756 / 100 / 56 to 816 / 48 / 48; not counting
the junctions of a tip that only touches the other's outline, :data:`TIP_CUT`, then took them to 868 / 44 / 24 and
816 / 52 / 44; a border counts only where the masks cover it, :data:`CONTACT_COVER`: 868 / 44 / 24 and
820 / 48 / 44):

=========================================================  =================  ==================
pairs                                                      junctions          shape
=========================================================  =================  ==================
3,020 drawn stick-figure pairs, back mask = its visible    5914 / 118 / 8     2102 / 36 / 3902
part, edges blurred (sigma 0.7)
the same, sigma 1.5 (3,014 pairs)                          5580 / 350 / 98    2314 / 46 / 3668
the same, back mask spilling at 0.6 over its hidden part   3344 / 2142 / 554  6032 / 0 / 8
(junctions without the overlap confidence; with it: 6032 / 8 / 0)
the matting benchmark's two characters meeting along a     undecided or wrong right
seam (simulated segmenter masks, 400 and 512 px; the cel   (-0.02, +0.02,
scene with 2.5 px more blur)                               -0.07)
=========================================================  =================  ==================

So the overlap confidence comes first for every caller, and each caller names its seam cue; a single rule for both
(junctions, then the shape where they stay undecided) put the cel scene's back character in front and ordered
figures that do not touch (1 px apart) by shape over the ground line. Re-checked for the mattes alone after the
junction cue's fix (its 0.5 level, centred and weighted junctions), on their own kind of input, the matting
benchmark's overlap scene as simulated segmenter masks (7 sizes 96-720 px, extra blur 0 / 1.5 / 2.5, 8 seeds, both
orders): the shape cue 306 / 10 / 20, junctions then the shape where they stay undecided 278 / 2 / 56, so the mattes
keep the shape cue.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from .ops import disk

__all__ = ["CONFIDENCE_GAP", "CONTACT_COVER", "JUNCTION_RADIUS", "OCCLUSION_MARGIN", "SEAM_REACH", "TIP_CUT", "Window", "in_front",
           "mask_windows", "occlusion", "occlusion_order"]

#: a window of one layer: its alpha ``[y1-y0, x1-x0]`` (array or tensor) over its int box ``(x0, y0, x1, y1)``
#: (x1/y1 exclusive); None = an empty layer. Known limit: the cues read the alpha as 0 outside the box, while the
#: junction cue reads two masks by their sum (:func:`_layers`), so its reading depends on the box: style editing's
#: windows (:func:`mask_windows`, the tight box of ``mask > 0.5``) drop the soft edge just outside it, the puppet's
#: (the masks' non-zero support) keep it, and the two can order the same pair differently (the tests' stick figures
#: 20 px apart, sigma 0.7: +0.04 cropped, +0.002 whole). Reading the whole soft edge everywhere was tried and not
#: adopted: the junction cue was tuned on the cropped reading and loses on the whole one (drawn pairs, right /
#: undecided / wrong: sigma 0.7 868 / 44 / 24 -> 864 / 48 / 24, sigma 1.5 816 / 52 / 44 -> 800 / 56 / 56)
Window = tuple

#: smallest difference of the mean soft masks on an overlap (both > 0.5) that says which instance is in front: an
#: occluded part is not in the back instance's mask, or only weakly
CONFIDENCE_GAP = 0.05
#: radius (pixels) of the disc round a junction where two masks and the background meet, over which the occlusion
#: cue (:func:`occlusion`) measures how much of it each mask covers: a few pixels, so it sees the contours' corners
#: there, not the width of the parts. A radius following the thinner part's local half-width (the distance transform
#: the tip rule reads; small figures' arms are 2-3 px against this 4 px disc) was tried and not adopted: on the drawn
#: pairs (right / undecided / wrong at figure scale 0.7 / 1.0 / 1.4; sigma 0.7, then 1.5), the fixed 4 px reads
#: 172/20/12, 276/16/8, 420/8/4; 144/16/32, 264/20/4, 408/16/8, and 1.5x the half-width clamped to 2-4 px reads
#: 180/12/12, 272/12/16, 420/8/4; 124/28/40, 244/36/8, 408/16/8 (the half-width itself or clamped to 3-4 px: worse)
JUNCTION_RADIUS = 4
#: smallest mean coverage difference at the junctions that orders two touching layers by the input's occlusion
#: (the tests' drawn figures, one partly hidden by the other: 0.05-0.2; masks that overlap in full, amodal ones: 0)
OCCLUSION_MARGIN = 0.03
#: the radius (pixels) of the disc by which the shape cue (:func:`_wraps_around`) grows each mask at 0.5 to find
#: the seam where they meet: masks with up to ``2 * SEAM_REACH - 1`` px of background between them meet there
SEAM_REACH = 3
#: the shortest border, as a share of the hidden part's width round the junction, along which a part going behind
#: the other is cut; shorter, it is a tip that only touches the other's outline (1-2 px against an arm's 4-5)
TIP_CUT = 0.5
#: the least joint coverage (``a + b``) that both pixels across a shared border must reach somewhere along it for
#: the masks to be in contact there: a background weight under a third. Two drawings that only come near each other
#: (1 px of background between them) leave a seam whose pixels the blur covers only in part (0.58 at sigma 0.7),
#: each given by :func:`_layers` to the mask with the larger of two alphas under 0.5 (the anti-aliasing): their
#: junctions said which was in front by noise (arm tips 1 px apart read +-0.19). A border where a part is cut by
#: the other is covered in full (the back mask's soft edge is the front one's complement). Known limit: blurred more
#: (sigma 1.5) such a gap reads 0.74 covered and still counts; drawings that abut with no gap at all stay decided
#: by their outlines. Levels 0.6-0.7 keep the drawn pairs' counts (sigma 0.7 868 / 44 / 24; sigma 1.5 816 / 52 / 44
#: -> 820 / 48 / 44); 0.8 lost 12 right answers at sigma 1.5
CONTACT_COVER = 2 / 3


def mask_windows(masks: Tensor, threshold: float = 0.5) -> list[Window | None]:
    """The :data:`Window` of each mask of ``[N,H,W]``: the mask over the tight box of ``mask > threshold``
    (None when that is empty)."""
    out: list[Window | None] = []
    for m in masks:
        fg = m > threshold
        rows, cols = torch.nonzero(fg.any(1)).flatten(), torch.nonzero(fg.any(0)).flatten()
        if not len(rows):
            out.append(None)
            continue
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        out.append((m[y0:y1, x0:x1].detach().float().cpu().numpy(), (x0, y0, x1, y1)))
    return out


def _window_alpha(window: Window, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """float32 ``[y1-y0, x1-x0]``: the window's alpha over that part of the picture (0 outside its box)."""
    out = np.zeros((y1 - y0, x1 - x0), np.float32)
    alpha, (bx0, by0, bx1, by1) = window
    cx0, cy0, cx1, cy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
    if cx0 < cx1 and cy0 < cy1:
        part = alpha[cy0 - by0:cy1 - by0, cx0 - bx0:cx1 - bx0]
        part = part.detach().float().cpu().numpy() if isinstance(part, Tensor) else np.asarray(part, np.float32)
        out[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = part
    return out


def _layers(sa: np.ndarray, sb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``a, b``: the pixels of two soft masks, read at one 0.5 level for both. A pixel is background where
    the background's weight in the layer model (``1 - sa - sb``) is over 0.5; else it is the mask's with more alpha
    there (both where they tie, or where both exceed 0.5: an overlap). Each mask read alone at 0.5 left the pixels
    of a blurred seam, where both masks are under 0.5 but together cover the pixel, as background between them:
    junctions along the whole seam, read by the local widths of the parts."""
    both = (sa > 0.5) & (sb > 0.5)
    covered = (sa + sb) > 0.5
    a = both | (covered & (sa >= sb))
    b = both | (covered & (sb >= sa))
    return a.astype(np.uint8), b.astype(np.uint8)


def _corners(m: np.ndarray) -> np.ndarray:
    """uint8 ``[h-1, w-1]``: 1 at each pixel corner whose 2x2 block of ``m [h,w]`` holds a 1."""
    return m[:-1, :-1] | m[1:, :-1] | m[:-1, 1:] | m[1:, 1:]


def occlusion(p: Window | None, q: Window | None) -> float:
    """The junction cue (:func:`in_front`'s second): how clearly layer ``p`` lies in front of layer ``q`` in the
    picture, in [-1, 1] (negative: behind; 0: they do not touch, or no side wins). Where a figure partly hides
    another, the front one's outline runs on unbroken past the junctions where the two masks and the background
    meet (a T-junction), while the hidden one's outline stops there at a corner: in a small disc round a junction
    the front mask covers about half, the hidden one a wedge. The cue is the mean, over the junctions (pixel
    corners; the two masks read at one 0.5 level, :func:`_layers`), of ``p``'s coverage less ``q``'s in the disc
    centred there, each junction weighted by how clearly it reads (places that say nothing, outlines meeting at a
    point, read near 0; an arm's tip that only touches the other's outline, over a border shorter than
    :data:`TIP_CUT` of its width, does not count: a part going behind is cut across its width; nor does a border
    that the masks cover nowhere at :data:`CONTACT_COVER`, a seam of anti-aliasing between figures that do not
    touch: they read 0, undecided); it needs no depth
    and does not depend on the parts' widths (an arm crossing a body reads the same as a body hiding an arm). Masks
    that overlap in full (amodal masks, both drawn whole) meet at crossings that read the same both ways: 0.

    ``p``, ``q``: :data:`Window` s (alpha over an int box, read at 0.5), e.g. from :func:`mask_windows`."""
    if p is None or q is None:
        return 0.0
    (px0, py0, px1, py1), (qx0, qy0, qx1, qy1) = p[1], q[1]
    if max(px0, qx0) > min(px1, qx1) or max(py0, qy0) > min(py1, qy1):
        return 0.0  # their boxes do not touch
    r = JUNCTION_RADIUS  # the window: where both boxes meet, grown by the disc (the junctions lie in both boxes)
    x0, y0 = max(px0, qx0) - r - 2, max(py0, qy0) - r - 2
    x1, y1 = min(px1, qx1) + r + 2, min(py1, qy1) + r + 2
    sa, sb = _window_alpha(p, x0, y0, x1, y1), _window_alpha(q, x0, y0, x1, y1)
    a, b = _layers(sa, sb)
    # the junctions: pixel corners where the two masks and the background meet (a 2x2 block holding pixels of p
    # alone, of q alone and of neither). A pixel merely near the other mask and the background is not one (a
    # one-pixel rim of one mask between the other and the background used to count along its whole length and
    # outweigh the true junctions); nor is a corner where the masks overlap (amodal masks, both drawn whole, cross
    # there: their outlines say nothing of which is in front)
    only_a, only_b, bg = a & (1 - b), b & (1 - a), 1 - (a | b)
    vertex = _corners(only_a) & _corners(only_b) & _corners(bg) & (1 - _corners(a & b))
    if not vertex.any():
        return 0.0
    disc = disk(r).astype(np.float32)
    disc /= disc.sum()
    cover = cv2.filter2D(a.astype(np.float32) - b.astype(np.float32), -1, disc, borderType=cv2.BORDER_CONSTANT)
    # each junction reads the disc centred on its corner (the mean over its 2x2 block; reading the block's pixels
    # counted the side with more pixels there more often), and counts by how clearly it reads: a T-junction reads
    # far from 0 (a wedge against a half), while places that say nothing read near 0 by symmetry and used to
    # outvote it (two outlines meeting at one point, heads or feet side by side; an arm's tip ending on the other
    # figure's outline: two stick figures 18 px apart read the wrong way, 20 px apart undecided)
    read = ((cover[:-1, :-1] + cover[1:, :-1] + cover[:-1, 1:] + cover[1:, 1:]) / 4)[vertex > 0]
    weight = np.abs(read)
    # a tip that only touches the other figure's outline (an arm's rounded end on a body's edge) reads as a part
    # going behind it: the tip covers a small wedge of the disc, the other mask about half. A part going behind
    # is cut across its whole width there (the border the two masks share is at least as long as the part is
    # wide), a tip touches over a pixel or two: a junction whose hidden side meets the other over a border
    # shorter than that side's width round it says nothing of the order
    labels, length, contact = _contact_lengths(only_a, only_b, (sa + sb) >= CONTACT_COVER)
    inner = (cv2.distanceTransform(only_a, cv2.DIST_L2, 5), cv2.distanceTransform(only_b, cv2.DIST_L2, 5))
    reach = r  # how far round a junction the hidden part's width is measured
    for k, (y, x) in enumerate(zip(*np.nonzero(vertex))):
        border = int(labels[y:y + 2, x:x + 2].max())
        dist = inner[0 if read[k] < 0 else 1][max(0, y - reach):y + reach + 2, max(0, x - reach):x + reach + 2]
        width = 2 * float(dist.max()) - 1
        if border == 0 or not contact[border] or length[border] < TIP_CUT * width:
            weight[k] = 0.0
    return float((read * weight).sum() / weight.sum()) if weight.sum() > 0 else 0.0


def _contact_lengths(only_a: np.ndarray, only_b: np.ndarray,
                     covered: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The borders two masks share, each the pixels of either with a 4-neighbour in the other, 8-connected.
    Returns (int32 labels, 0 = not on a border; the length of each border, the pixel edges between the masks;
    bool per border: whether at one of its edges at least both pixels are ``covered``, bool ``[h,w]``)."""
    k = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.uint8)
    contact = (only_a & cv2.dilate(only_b, k)) | (only_b & cv2.dilate(only_a, k))
    n, labels = cv2.connectedComponents(contact.astype(np.uint8), connectivity=8)
    across = (only_a[:, :-1] & only_b[:, 1:]) | (only_b[:, :-1] & only_a[:, 1:])
    down = (only_a[:-1] & only_b[1:]) | (only_b[:-1] & only_a[1:])
    edges = np.concatenate([labels[:, :-1][across > 0], labels[:-1][down > 0]])
    solid = np.concatenate([(covered[:, :-1] & covered[:, 1:])[across > 0], (covered[:-1] & covered[1:])[down > 0]])
    return labels, np.bincount(edges, minlength=n).astype(np.float32), np.bincount(edges[solid], minlength=n) > 0


def in_front(p: Window | None, q: Window | None, margin: float = OCCLUSION_MARGIN, seam: str = "junctions") -> int:
    """Whether layer ``p`` is in front of layer ``q``: 1 (in front), -1 (behind) or 0 (they do not touch, or no cue
    decides). Where the masks overlap (both > 0.5), the one more confident there by more than
    :data:`CONFIDENCE_GAP` is in front; else ``seam`` names the cue for masks that meet:

    * ``"junctions"`` (style editing, the puppet): :func:`occlusion` by more than ``margin`` (drawn figures, the
      back one's mask its visible part, sigma 0.7: 868 of 936 right, 24 wrong, see the module's table; masks
      that overlap in full: 0);
    * ``"shape"`` (the mattes): :func:`_wraps_around` for masks whose 0.5 levels have at most
      ``2 * SEAM_REACH - 1`` (5) px between them (the segmenter's soft
      masks of two large characters meeting along a seam, blurred there, where the junction cue misreads the
      gaps along the seam as background, e.g. the cel scene with 2.5 px more blur reads -0.07; on the drawn
      figures it is wrong on 3902 of 6040)."""
    if seam not in ("junctions", "shape"):
        raise ValueError(f"unknown seam cue {seam!r}; allowed: junctions, shape")
    if p is None or q is None:
        return 0
    (px0, py0, px1, py1), (qx0, qy0, qx1, qy1) = p[1], q[1]
    # too far apart for any cue: a shortcut only, it must never reject a pair a cue would order. The overlap
    # confidence and the junction cue need boxes that touch (:func:`occlusion`); the shape cue's seam reaches masks
    # whose 0.5 levels (inside the boxes) have up to 2 * SEAM_REACH - 1 px between them. A fixed SEAM_REACH here
    # dropped masks 4-5 px apart that the shape cue orders, leaving the mattes' order to the scores.
    g = 0 if seam == "junctions" else 2 * SEAM_REACH - 1
    if max(px0, qx0) > min(px1, qx1) + g or max(py0, qy0) > min(py1, qy1) + g:
        return 0
    x0, y0, x1, y1 = min(px0, qx0), min(py0, qy0), max(px1, qx1), max(py1, qy1)  # both layers whole
    sa, sb = _window_alpha(p, x0, y0, x1, y1), _window_alpha(q, x0, y0, x1, y1)
    a, b = sa > 0.5, sb > 0.5
    both = a & b
    if both.any():
        gap = float(sa[both].mean()) - float(sb[both].mean())
        if abs(gap) > CONFIDENCE_GAP:
            return 1 if gap > 0 else -1
    if seam == "junctions":
        cue = occlusion(p, q)
        return 1 if cue > margin else -1 if cue < -margin else 0
    behind = _wraps_around(a, b)
    return 0 if behind is None else (-1 if behind == 0 else 1)


def _wraps_around(a: np.ndarray, b: np.ndarray) -> int | None:
    """Which of two masks that meet along a seam (at most ``2 * SEAM_REACH - 1`` px apart) is behind: 0 (``a``),
    1 (``b``) or None (they do not meet, or no cue). The occluder's silhouette is whole, so along the seam it bulges
    into the other mask, which wraps around it (the bite the occluder takes out of it): around the seam (a box about
    the smaller mask's size) the mask behind covers more pixels than the one in front."""
    near = disk(SEAM_REACH)
    seam = cv2.dilate(a.astype(np.uint8), near).astype(bool) & cv2.dilate(b.astype(np.uint8), near).astype(bool)
    area = min(int(a.sum()), int(b.sum()))
    if area == 0 or not seam.any():
        return None
    r = max(3, round(0.5 * area ** 0.5))
    ys, xs = np.nonzero(seam)
    h, w = seam.shape
    y0, y1 = max(0, int(ys.min()) - r), min(h, int(ys.max()) + 1 + r)
    x0, x1 = max(0, int(xs.min()) - r), min(w, int(xs.max()) + 1 + r)
    k = (2 * r + 1, 2 * r + 1)
    cover_a = cv2.blur(a[y0:y1, x0:x1].astype(np.float32), k, borderType=cv2.BORDER_CONSTANT)
    cover_b = cv2.blur(b[y0:y1, x0:x1].astype(np.float32), k, borderType=cv2.BORDER_CONSTANT)
    sel = seam[y0:y1, x0:x1]
    diff = float(cover_a[sel].mean() - cover_b[sel].mean())
    if abs(diff) < 1e-3:
        return None
    return 0 if diff > 0 else 1


def occlusion_order(base: Sequence[int], windows: Sequence[Window | None],
                    margin: float = OCCLUSION_MARGIN, seam: str = "junctions") -> list[int]:
    """``base`` (a back-to-front order of the layers ``windows`` describe) with every pair of layers that
    :func:`in_front` (with ``margin`` and ``seam``) orders put as the picture shows them: the one hidden in part
    goes behind. Layers no cue orders keep their place in ``base``; when the cues form a cycle, the earliest layer
    of ``base`` still left goes first."""
    n = len(windows)
    if sorted(base) != list(range(n)):
        raise ValueError(f"base must order the {n} layers (each index 0..{n - 1} once), got {list(base)}")
    behind: list[set[int]] = [set() for _ in range(n)]  # behind[j]: the layers that must be painted before j
    for i in range(n):
        for j in range(i + 1, n):
            cue = in_front(windows[i], windows[j], margin, seam)
            if cue > 0:
                behind[i].add(j)
            elif cue < 0:
                behind[j].add(i)
    out: list[int] = []
    left = list(base)
    while left:
        ready = [k for k in left if not behind[k] & set(left)]
        pick = ready[0] if ready else left[0]  # a cycle: the base order decides
        out.append(pick)
        left.remove(pick)
    return out
