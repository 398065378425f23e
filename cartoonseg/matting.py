"""Instance alpha mattes: fractional alpha for hair strands and semi-transparent edges, per instance, consistent
where instances overlap (the instance-matting setting of "End-to-End Human Instance Matting", arXiv 2403.01510,
built here from the segmenter's refined soft masks and a classical matting solver instead of a trained network).

For each instance:

1. **Trimap** from its refined soft mask ``p`` (:func:`trimap_from_soft`): *unknown* where the mask is uncertain
   (``low < p < high``) or within ``band`` pixels of its 0.5 contour, on both sides; *foreground* / *background*
   beyond. The segmenter refines at a working size (720) and pastes the mask back bilinearly, so at image resolution
   its ramp is as wide as its uncertainty times the working-to-image scale: ``band`` defaults to twice the mask's
   measured ramp width (:func:`ramp_width`, at least 3 px, measured across the edge only), sized from the mask
   itself. An uncertain *area* (:func:`wide_uncertain`: a veil the mask holds at ~0.5) is no ramp: it keeps the
   soft mask (the solver has no sample of its colour and takes it for background), the rest is matted. **Line art**
   (:func:`snap_to_outlines`): dark thin lines (a morphological black-hat, :func:`line_art`, whose radius follows
   the width of the image's lines, :func:`line_radius`, not the band; two thresholds, so a faint stretch of an
   outline continues its strong parts) cut the unknown band into regions; regions
   reached only from the mask's interior are foreground, regions reached only from the outside background (where a
   gap in the outline joins the two, pixels are decided by which way the line art makes a detour, so the gap is left
   to the solver, not the whole outline), and the
   dark line between an interior region and the outside (the character's outline) is foreground with a 1-px
   unknown fringe for its anti-aliasing (where the outline is more than 1 px thick, its outermost pixels, partly
   covered, are unknown too and only its core is forced); strokes leaving the outline (hair, or a background line meeting it) stay
   unknown, and beyond the band (:func:`free_strokes`) those that end inside the picture become unknown too (hair
   strands thinner than the refiner's grid are missing from the soft mask), while those that run on to the image
   border are the scene's line art and stay background, and line art inside another instance's mask is that
   instance's, except over an instance *behind* this one (front-to-back order, step 3) farther than the band plus
   the line width from its silhouette's edge (its outline lies within) and where its mask gives way (below
   ``high``: it holds what is visible of that instance, so it dips under a stroke drawn over it, not under its own
   line art): there a stroke leaving this instance is drawn over the back one (its hair strands crossing the
   character behind it) and is followed, the back character's colours being the known background around it.
   Conversely a stroke whose line runs on into another instance's mask deeper than that band, where that mask
   holds (:func:`_rooted_elsewhere`), is that instance's own (a strand of a character beside or behind this one,
   lost over the background, that touches this one) and is not followed.
   Limits (the masks decide, and cannot always): where the back instance's mask holds under a strand of this one
   drawn over it (a segmenter that does not dip there), the strand reads as the back's own line ending under this
   one (which stays the back's), so it is not followed and stays in the back matte; a strand touching two
   instances over the background that runs into neither deeper than the band is followed by both and goes to the
   front one in step 3. A stroke whose line runs on deep into this instance's own mask where it gives way
   (:func:`_drawn_over`: drawn over this one, a front instance's lost strand) is not followed; per connected
   stroke, so strands of two instances crossing over the background (one stroke) are followed by both.
   Where two instances meet, line art is also found as the luminance ridge across the seam between
   their masks (:func:`seam_ridges`): the front one's outline, too faint next to a dark cel shade for the
   black-hat's threshold; its pixels on the far side stay unknown even when it is 1 px wide (the solver has the
   front fill and the back character on either side). Closed-form matting alone mistakes a dark outline between a fill and a
   background for background (three colours in one window break its colour-line model); background lines that
   cross the band stay background. Where no closed outline separates inside from outside (a defocused edge, hair)
   the band stays unknown.
2. **Alpha** from the image colours in a crop around the instance (the box of its unknown and foreground pixels plus
   a margin) with pymatting's closed-form matting (Levin et al. 2008, ``estimate_alpha_cf``; ``method="knn"`` and
   ``"lkm"`` are the library's other solvers), clipped to [0, 1]. pymatting is the optional extra ``matting``.
   A followed stroke rooted deep in this instance's own mask, where it holds (its own strand for certain), or
   drawn over an instance behind this one (its line runs deep into that mask where it gives way,
   :func:`_drawn_over`: the back's mask settles the owner), takes its coverage by its own ink instead
   (:func:`_ink_alpha`): the solver cannot step along a line of one colour, so a strand meeting another instance's
   line (known background here) came out as a ramp, about half its alpha.
3. **Consistency** (:func:`compose_front_to_back`): instances are ordered front to back (:func:`occlusion_order`,
   the pairwise cues of :mod:`cartoonseg.occlusion`: where two soft masks overlap, the one clearly more confident
   there is in front; masks that only meet along a seam: the one wrapping around the other is behind; ties by
   score), then each matte keeps
   only what the instances in front leave visible, ``a_i <- a_i * (1 - sum of the front mattes)``, the "over"
   decomposition of the image. The mattes then sum to at most 1 per pixel, and a pixel claimed by two instances
   goes to the front one.

:func:`instance_alphas` returns ``Instances`` with ``alphas`` set; :func:`cutouts` makes RGBA cut-outs whose colours
are the estimated foreground colours (:func:`unmix`: pymatting ``estimate_foreground_ml``), so no background fringe
remains. The applications (puppet, Ken Burns, style editing) cut characters out with the mattes when the instances
carry them (see README, "Alpha mattes").
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from .io import to_rgb_uint8
from .occlusion import mask_windows
from .occlusion import occlusion_order as _occlusion_order
from .ops import disk
from .structures import Instances

__all__ = ["MattingConfig", "METHODS", "ramp_width", "wide_uncertain", "noise_variance", "trimap_from_soft", "snap_to_outlines", "line_art", "line_radius", "seam_ridges", "free_strokes", "solve_alpha", "occlusion_order", "compose_front_to_back",
           "instance_alphas", "unmix", "cutouts", "check_available"]

METHODS = ("cf", "knn", "lkm")
QUANTISATION_VARIANCE = (1 / 255) ** 2 / 12  # the noise variance of 8-bit colours: no finer variation is resolved
#: Smallest side (pixels) the solvers take: closed-form and LKM matting work on 3x3 windows.
MIN_SIDE = 3
#: :func:`line_art`: the weak (continuation) threshold as a fraction of the line contrast.
WEAK_LINE = 0.5
#: :func:`seam_ridges`: how much darker than both sides across a seam a pixel must be to be an outline there (5 grey
#: levels; a cel-shaded front character's outline next to its shade is ~0.06 darker than the shade).
SEAM_CONTRAST = 0.02
#: :func:`unmix`: weight of the foreground smoothness where alpha changes (pymatting's ``gradient_weight``, default
#: 1.0, which spreads a fill's colour into a thin dark outline and lightens it in a cut-out).
FOREGROUND_GRADIENT_WEIGHT = 0.1
#: :func:`_ink_alpha`: largest angle (radians) between a colour's and a strand's direction from the background for
#: the colour to count as the strand's ink (0.06 rad: 8-bit quantisation on a faint strand; a brown strand leaving a
#: dark purple outline differs by ~0.3).
INK_ANGLE = 0.06


@dataclasses.dataclass(frozen=True)
class MattingConfig:
    """Settings of :func:`instance_alphas`.

    Attributes:
        band: half-width in pixels of the unknown band around each mask's 0.5 contour (both sides); None = twice
            the soft mask's ramp width (:func:`ramp_width`: its uncertainty at image resolution), at least 3.
        low, high: soft-mask values strictly between these are unknown (uncertain) pixels.
        method: pymatting solver: ``"cf"`` (closed-form, default), ``"knn"`` or ``"lkm"``.
        margin: extra pixels of context around each instance crop.
        line_art: snap the trimap to dark outlines (:func:`snap_to_outlines`) and follow free strokes
            (:func:`free_strokes`); False = the band alone.
        line_contrast: how much darker than its surroundings (black-hat of the luminance in [0,1]) a pixel must be
            to count as line art; pixels darker by half of it continue a line (hysteresis, :func:`line_art`).
        epsilon: regularisation of the closed-form matting Laplacian; None = the image's noise variance in the
            instance's unknown band (:func:`noise_variance`), at least the 8-bit quantisation variance
            ``(1/255)^2 / 12`` = 1.3e-6. In the local linear model of closed-form matting (as in the guided filter)
            colour variations below ``epsilon`` count as noise, not edges, so a textured or grainy background
            does not leak into the matte; below the quantisation floor flat-coloured windows make the system
            ill-conditioned (pymatting's default 1e-7 leaves a thin flat strand unsolved).
    """

    band: int | None = None
    low: float = 0.05
    high: float = 0.95
    method: str = "cf"
    margin: int = 8
    line_art: bool = True
    line_contrast: float = 0.15
    epsilon: float | None = None

    def __post_init__(self) -> None:
        if self.band is not None and int(self.band) < 1:
            raise ValueError(f"band must be >= 1 pixel or None, got {self.band}")
        if not 0.0 <= self.low < 0.5 < self.high <= 1.0:
            raise ValueError(f"need 0 <= low < 0.5 < high <= 1, got low={self.low} high={self.high}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if int(self.margin) < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0.0 < self.line_contrast < 1.0:
            raise ValueError(f"line_contrast must be in (0, 1), got {self.line_contrast}")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")


def _pymatting():
    from ._optional import require

    return require("pymatting", extra="matting", purpose="instance alpha mattes")


def check_available() -> None:
    """Raise the one-line missing-extra error now when pymatting is not installed (commands call it before loading
    models, so ``--matting`` without the extra fails at once, not after the first image)."""
    _pymatting()


def ramp_width(soft: np.ndarray, low: float = 0.05, high: float = 0.95) -> float:
    """Mean width in pixels of a soft mask's transition: uncertain pixels (``low < soft < high``) per pixel of the
    0.5 contour's length. A mask refined at a working size ``s`` times smaller than the image and pasted back
    bilinearly has a ramp ``s`` times wider than at the working size; 0 for a binary mask.

    Only the ramp along the edge counts, not a wide uncertain area (:func:`wide_uncertain`: a veil or glass the mask
    holds at ~0.5): counted, such an area inflated the width without bound, the default band (twice the width)
    swallowed every certain pixel and the whole instance kept its soft mask."""
    return _transition(soft, low, high)[0]


def wide_uncertain(soft: np.ndarray, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """bool ``[H,W]``: the uncertain pixels of a soft mask (``low < soft < high``) that are no edge ramp but an
    uncertain *area*: where the distance across the transition (from the certain background, ``soft <= low``, to
    the certain foreground, ``soft >= high``) is more than ``2 m + 2`` px (``m``: its median along the 0.5 contour,
    the edge's ramp), in a region at least that wide (a morphological opening: a thin part the mask holds at 0.7,
    such as a strand, is a ramp of its own, not an area). A veil or glass drawn semi-transparent, which the
    segmenter leaves at ~0.5: the solver has no sample of its colour there and takes it for background, so
    :func:`instance_alphas` keeps the soft mask on these pixels."""
    return _transition(soft, low, high)[1]


def _transition(soft: np.ndarray, low: float, high: float) -> tuple[float, np.ndarray]:
    """(:func:`ramp_width`, :func:`wide_uncertain`) of a soft mask."""
    soft = np.asarray(soft, dtype=np.float32)
    binary = (soft > 0.5).astype(np.uint8)
    uncertain = (soft > low) & (soft < high)
    wide = np.zeros(soft.shape, bool)
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    length = sum(cv2.arcLength(c, True) for c in contours)
    if length <= 0:
        return 0.0, wide
    certain_fg, certain_bg = soft >= high, soft <= low
    if not certain_fg.any() or not certain_bg.any():  # no transition to measure across
        return float(uncertain.sum()) / length, wide
    across = (cv2.distanceTransform((~certain_fg).astype(np.uint8), cv2.DIST_L2, 5)
              + cv2.distanceTransform((~certain_bg).astype(np.uint8), cv2.DIST_L2, 5))
    points = np.concatenate([c.reshape(-1, 2) for c in contours])
    cap = 2.0 * float(np.median(across[points[:, 1], points[:, 0]])) + 2.0
    wide = cv2.morphologyEx((uncertain & (across > cap)).astype(np.uint8), cv2.MORPH_OPEN,
                            disk(max(1, round(cap / 2)))).astype(bool)
    if not wide.any():
        return float(uncertain.sum()) / length, wide
    near = cv2.dilate(wide.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    kept = float((~near[points[:, 1], points[:, 0]]).mean())
    if kept <= 0:  # the whole contour runs through the area: no edge ramp to measure
        return float(uncertain.sum()) / length, wide
    return float((uncertain & ~wide).sum()) / (length * kept), wide


def _luminance(rgb) -> np.ndarray:
    """float32 ``[H,W]`` luminance in [0,1] of an RGB image ``[H,W,3]`` (uint8, or float in [0,1])."""
    image = np.asarray(rgb, dtype=np.float32)
    if np.asarray(rgb).dtype == np.uint8:
        image = image / 255.0
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def noise_variance(rgb: np.ndarray, where: np.ndarray | None = None) -> float:
    """Variance of the per-pixel noise of an image (uint8 or float RGB in [0,1]), from its luminance: Immerkaer's
    noise estimator (1996, the 3x3 mask that cancels linear structure) with the median absolute response instead
    of the mean, so edges do not count as noise; over the pixels ``where`` (bool ``[H,W]``) or the whole image."""
    if np.shape(rgb)[0] < 3 or np.shape(rgb)[1] < 3:
        return 0.0
    lum = _luminance(rgb)
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = np.abs(cv2.filter2D(lum, -1, kernel))[1:-1, 1:-1]
    if where is not None:
        response = response[np.asarray(where, dtype=bool)[1:-1, 1:-1]]
    if response.size == 0:
        return 0.0
    sigma = float(np.median(response)) / (0.6745 * 6.0)  # the mask's gain on white noise is sqrt(36)
    return sigma * sigma


def trimap_from_soft(soft: np.ndarray, band: int, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """float64 trimap ``[H,W]`` (0 background, 0.5 unknown, 1 foreground) from a soft mask ``[H,W]`` in [0,1].

    Unknown: pixels within ``band`` pixels of the 0.5 contour (inside and outside) and every uncertain pixel
    (``low < soft < high``). Foreground: the rest of ``soft > 0.5``; background: the rest.
    """
    soft = np.asarray(soft, dtype=np.float32)
    binary = (soft > 0.5).astype(np.uint8)
    band = int(band)
    core = cv2.erode(binary, disk(band), borderType=cv2.BORDER_REPLICATE).astype(bool) & (soft >= high)
    outer = cv2.dilate(binary, disk(band), borderType=cv2.BORDER_REPLICATE).astype(bool) | (soft > low)
    trimap = np.full(soft.shape, 0.5)
    trimap[~outer] = 0.0
    trimap[core] = 1.0
    return trimap


def line_art(rgb: np.ndarray, radius: int, contrast: float = 0.15) -> np.ndarray:
    """bool ``[H,W]``: dark line art of an image (uint8 or float RGB in [0,1]): the darkness of a pixel is how far
    its luminance lies below its morphological closing with a disk of ``radius`` (a black-hat: dark structures up to
    ~2 ``radius`` wide). Two thresholds (hysteresis, as in Canny's edge linking): pixels darker by at least
    ``contrast`` are line art, and so are pixels darker by at least ``WEAK_LINE * contrast`` that are 8-connected to
    them through such pixels. A thin anti-aliased outline between a fill and a dark cel-shade is darker than its
    closing only by the shade's small lead, around the threshold, so one threshold finds it in dashes (a gap in the
    outline every few pixels); its weak stretches are continued from the strong ones, while faint structures with
    no strong part (texture, noise) stay out."""
    return _line_masks(rgb, radius, contrast)[1]


def _line_masks(rgb: np.ndarray, radius: int, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """(strong, linked): the pixels darker than their closing by ``contrast``, and those plus the weaker ones
    connected to them (:func:`line_art`)."""
    lum = _luminance(rgb)
    dark = cv2.morphologyEx(lum, cv2.MORPH_BLACKHAT, disk(max(1, int(radius))), borderType=cv2.BORDER_REPLICATE)
    strong = dark > contrast
    weak = dark > WEAK_LINE * contrast
    if not strong.any() or not (weak & ~strong).any():
        return strong, strong
    n, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
    seeded = np.zeros(n, bool)
    seeded[np.unique(labels[strong])] = True
    seeded[0] = False
    return strong, seeded[labels]


def line_radius(rgb: np.ndarray, where: np.ndarray, contrast: float = 0.15, largest: int = 16) -> int:
    """Black-hat radius for the line art of an image (uint8 or float RGB ``[H,W,3]``) from the width of its lines
    among the pixels ``where`` (bool ``[H,W]``: an instance's unknown band, where its outline runs): at least 2,
    at most ``largest``.

    Dark structures up to ``2 largest`` wide (:func:`line_art` with radius ``largest``) are found, and the half
    width of each at its ridge (the local maxima of its distance transform) measured; the median over the ridge
    pixels is the half width of the lines that make up most of their length (the outlines and strands; a
    cel-shading strip or a dark patch is short and wide), and the radius is that plus 1 px for the anti-aliasing.
    The scale of the line art is the artwork's, not the soft mask's: a blurred mask widens the band, and a
    black-hat as wide as the band takes shading strips for lines.
    """
    largest = max(2, int(largest))
    where = np.asarray(where, dtype=bool)
    dark = line_art(rgb, largest, contrast) & where
    if not dark.any():
        return 2
    dist = cv2.distanceTransform(dark.astype(np.uint8), cv2.DIST_L2, 5)
    ridge = dark & (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8)))
    half = float(np.median(dist[ridge])) if ridge.any() else 1.0
    return int(min(largest, max(2, round(half) + 1)))


def seam_ridges(rgb: np.ndarray, soft: np.ndarray, other: np.ndarray, where: np.ndarray, radius: int,
                noise: float = 0.0) -> np.ndarray:
    """bool ``[H,W]``: the line art along the seam between an instance and the others, found as the luminance
    minimum across the seam rather than by a global threshold.

    Where one character stands in front of another, the front one's outline runs along the seam between their
    masks; next to a dark cel shade it is only a few hundredths darker than its surroundings, below any black-hat
    threshold that keeps texture out (:func:`line_art`), and left to the solver it comes out half transparent (a
    window holding the fill, the outline and the back character breaks the colour-line model). Across the seam it
    is still a ridge: darker than both the front fill and the back character. ``soft``: the instance's soft mask,
    ``other``: the other instances' (their maximum), both ``[H,W]`` in [0,1]; the seam normal is the gradient of
    their smoothed difference. A pixel of ``where`` (bool: the instance's unknown band near the seam) is on the
    ridge where its luminance is a minimum along the normal (no higher than its neighbours 1 px away on either
    side) and lies below the brightest sample within ``radius + 1`` px on *each* side by more than
    ``max(SEAM_CONTRAST, 3 sqrt(noise))`` (``noise``: the noise variance, :func:`noise_variance`); ridge
    fragments under 3 px are dropped (noise). Where the back character is darker than the outline, or the front
    one has none, there is no ridge and nothing is found.
    """
    where = np.asarray(where, dtype=bool)
    if not where.any() or min(where.shape) < MIN_SIDE:
        return np.zeros(where.shape, bool)
    lum = _luminance(rgb)
    diff = cv2.GaussianBlur(np.asarray(soft, np.float32) - np.asarray(other, np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(diff, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(diff, cv2.CV_32F, 0, 1, ksize=3) / 8
    mag = np.sqrt(gx * gx + gy * gy)
    valid = where & (mag > 0.02)  # a seam: one mask rises where the other falls
    if not valid.any():
        return np.zeros(where.shape, bool)
    nx, ny = gx / np.maximum(mag, 1e-6), gy / np.maximum(mag, 1e-6)
    ys, xs = np.mgrid[0:lum.shape[0], 0:lum.shape[1]].astype(np.float32)
    reach = max(1, int(radius)) + 1

    def sample(k: float) -> np.ndarray:
        return cv2.remap(lum, xs + k * nx, ys + k * ny, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    ahead = [sample(k) for k in range(1, reach + 1)]
    behind = [sample(-k) for k in range(1, reach + 1)]
    depth = np.minimum(np.max(ahead, axis=0), np.max(behind, axis=0)) - lum
    minimum = (lum <= ahead[0] + 1e-6) & (lum <= behind[0] + 1e-6)
    ridge = valid & minimum & (depth > max(SEAM_CONTRAST, 3.0 * float(noise) ** 0.5))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ridge.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= 3
    keep[0] = False
    return keep[labels]


def free_strokes(line: np.ndarray, region: np.ndarray) -> np.ndarray:
    """bool ``[H,W]``: the strokes of line art that leave an instance and end inside the image.

    ``line``: line-art pixels (:func:`line_art`) over the whole image; ``region``: the instance's foreground and
    unknown pixels. Strokes are the 8-connected components of ``line`` outside ``region`` that touch it; a stroke
    that reaches the image border continues beyond the picture, like the scene's own line art (a horizon, a
    building edge passing behind the character), and is dropped; one that ends inside the picture (a hair strand
    the segmenter lost: thinner than its grid) is kept. A background line that ends behind the character is kept
    too: the solver decides with the image colours.
    """
    line = np.asarray(line, dtype=bool)
    region = np.asarray(region, dtype=bool)
    outside = line & ~region
    n, labels = cv2.connectedComponents(outside.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(line.shape, bool)
    near = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    touching = np.zeros(n, bool)
    touching[np.unique(labels[near & outside])] = True
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        touching[np.unique(edge)] = False
    touching[0] = False
    return touching[labels]


def _geodesic_steps(seed: np.ndarray, free: np.ndarray, limit: int, connectivity: int = 4) -> np.ndarray:
    """int32 ``[H,W]``: 4- (or 8-) connected steps from ``seed`` to each pixel through ``free`` pixels
    (``limit + 1`` where not reached within ``limit`` steps)."""
    dist = np.full(seed.shape, limit + 1, np.int32)
    reached = seed.astype(np.uint8)
    dist[seed] = 0
    free = free.astype(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS if connectivity == 4 else cv2.MORPH_RECT, (3, 3))
    for step in range(1, limit + 1):
        grown = cv2.dilate(reached, cross) & free
        new = (grown > reached)
        if not new.any():
            break
        dist[new] = step
        reached = grown | reached
    return dist


def snap_to_outlines(rgb: np.ndarray, trimap: np.ndarray, radius: int, contrast: float = 0.15,
                     lead: int | None = None, ridges: np.ndarray | None = None) -> np.ndarray:
    """Refine a trimap's unknown band with the image's line art (see the module docstring).

    Line pixels: unknown pixels of :func:`line_art` with ``radius`` and ``contrast``. The other pixels are split into 4-connected
    regions: a region touching the foreground and not the background is foreground, one touching the background
    and not the foreground is background. A region touching both (the outline has a gap, or there is none) is
    decided per pixel: foreground where the line art makes the way to the background a detour longer by more
    than ``lead`` (the band's full width; None = ``4 radius``) than the way to the foreground, background in the converse case,
    unknown otherwise (near the gap; everywhere when there is no outline). Line
    pixels next to a foreground region are the instance's outline (foreground), with a 1-px unknown fringe
    outside (anti-aliasing); where the outline has a core (pixels not next to the outside), its outermost pixels
    are unknown as well (partly covered: forced to 1 they make an opaque 1-px halo). Strokes that leave the outline (connected line pixels) are ambiguous, a hair strand
    or a background line meeting the outline, and stay unknown for the solver, with a 1-px fringe; so do line
    pixels next to an unknown region (an outline with a gap); other line pixels in the band belong to the
    background. ``ridges`` (bool ``[H,W]``, optional): more line pixels, counted as strong (the outline along a
    seam with another instance, :func:`seam_ridges`); their outermost pixels are unknown even on a 1-px outline
    (partly covered, between the front fill and the back character, which the solver tells apart; forced to 1
    they were a 1-px opaque halo on the benchmark's cel-shaded overlap).
    """
    trimap = np.asarray(trimap, dtype=np.float64)
    fg, bg = trimap == 1, trimap == 0
    unknown = ~fg & ~bg
    if not unknown.any() or not fg.any() or not bg.any():
        return trimap.copy()
    strong, line = _line_masks(rgb, radius, contrast)
    if ridges is not None:  # line art found along a seam with another instance (:func:`seam_ridges`)
        ridges = np.asarray(ridges, dtype=bool)
        strong, line = strong | ridges, line | ridges
    line &= unknown
    if not line.any():
        return trimap.copy()
    n, labels = cv2.connectedComponents((~line).astype(np.uint8), connectivity=4)
    touches_fg = np.zeros(n, bool)
    touches_fg[np.unique(labels[fg])] = True
    touches_bg = np.zeros(n, bool)
    touches_bg[np.unique(labels[bg])] = True
    inside = (touches_fg & ~touches_bg)[labels] & ~line
    outside = (touches_bg & ~touches_fg)[labels] & ~line
    # A region reached from both sides has a gap in its outline somewhere (where hair or another character's lines
    # merge into a dark patch wider than the black-hat, a faint stretch, a strand crossing it): decide it locally,
    # so one gap does not leave the whole band (and its thin outline, which the solver makes half transparent) to
    # the solver. A pixel is inside where the line art makes the way to the background a detour (steps around the
    # lines minus steps straight there) longer than the way to the foreground by more than ``lead``; near the gap,
    # and where there is no line (a defocused edge), neither way is a detour and the pixel stays unknown.
    both = (touches_fg & touches_bg)[labels] & ~line & unknown
    if both.any():
        lead = 4 * max(1, int(radius)) if lead is None else max(1, int(lead))  # the band's width
        detour = []
        for seed in (fg, bg):
            straight = cv2.distanceTransform((~seed).astype(np.uint8), cv2.DIST_L1, 3).astype(np.int32)
            detour.append(_geodesic_steps(seed, ~line, 3 * lead) - np.minimum(straight, 3 * lead + 1))
        inside |= both & (detour[1] - detour[0] > lead)
        outside |= both & (detour[0] - detour[1] > lead)
    square = np.ones((3, 3), np.uint8)
    outline = line & cv2.dilate(inside.astype(np.uint8), square).astype(bool)
    # the outline's outermost pixels (next to a pixel beyond the line) are partly covered (its anti-aliasing):
    # unknown where the outline has a core (its pixels not next to the outside), which stays foreground; a 1-px
    # outline is all edge and stays whole (the solver takes a lone thin dark line for background)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    edge = outline & cv2.dilate((~line & ~inside).astype(np.uint8), cross).astype(bool)
    soft_edge = edge & cv2.dilate((outline & ~edge).astype(np.uint8), square).astype(bool)
    if ridges is not None:  # along a seam the outline lies between the front fill and the back character, not a
        soft_edge |= edge & ridges  # lone line over a background: its partly covered pixels are the solver's
    n, strokes = cv2.connectedComponents(line.astype(np.uint8), connectivity=8)
    attached = np.zeros(n, bool)
    attached[np.unique(strokes[outline])] = True
    attached[0] = False
    attached = attached[strokes] & ~outline  # strokes leaving the outline: a hair strand or a background line
    # the fringe grows from the outline and the strokes' strong pixels: the weak ones hugging a line are its own
    # anti-aliased edge (in the fringe already), not more line to widen the unknown band by
    fringe = cv2.dilate((outline | (attached & strong)).astype(np.uint8), square).astype(bool) & ~outline & ~inside
    out = trimap.copy()
    out[unknown & (inside | outline) & ~soft_edge] = 1.0
    # a line between two background regions is the scene's; next to a region the solver decides, it stays unknown
    undecided = unknown & ~line & ~inside & ~outside
    near_undecided = cv2.dilate(undecided.astype(np.uint8), square).astype(bool)
    # (only its strong pixels: a weak stretch continuing a background line may be its fading end seen through the
    # character's half-transparent edge)
    out[unknown & (outside | (line & strong & ~outline & ~attached & ~near_undecided)) & ~fringe] = 0.0
    return out


def solve_alpha(rgb: np.ndarray, trimap: np.ndarray, method: str = "cf", epsilon: float = 1e-7) -> np.ndarray:
    """Alpha ``[H,W]`` (float64 in [0,1]) of an image (uint8 or float RGB ``[H,W,3]``) given a trimap; known pixels
    keep their trimap value. A trimap without unknown pixels is returned as is. ``epsilon`` regularises the
    closed-form Laplacian (``method="cf"`` only).

    Raises:
        ValueError: an unknown ``method``, or an image with unknown pixels that is thinner than the solvers' 3x3
            window (:func:`instance_alphas` keeps the soft mask there instead).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    trimap = np.asarray(trimap, dtype=np.float64)
    unknown = (trimap > 0) & (trimap < 1)
    if not unknown.any():
        return trimap.copy()
    if not (trimap == 1).any() or not (trimap == 0).any():  # the solvers need both known kinds
        return np.where(unknown, 0.5, trimap)
    if min(trimap.shape[:2]) < MIN_SIDE:
        raise ValueError(f"matting needs at least {MIN_SIDE}x{MIN_SIDE} pixels (the solvers' window), "
                         f"got {trimap.shape[0]}x{trimap.shape[1]}")
    pm = _pymatting()
    image = np.asarray(rgb, dtype=np.float64)
    if np.asarray(rgb).dtype == np.uint8:
        image = image / 255.0
    if method == "cf":
        alpha = pm.estimate_alpha_cf(image, trimap, laplacian_kwargs={"epsilon": float(epsilon)})
    else:
        alpha = {"knn": pm.estimate_alpha_knn, "lkm": pm.estimate_alpha_lkm}[method](image, trimap)
    alpha = np.clip(np.nan_to_num(alpha, nan=0.5), 0.0, 1.0)
    alpha[trimap == 1] = 1.0
    alpha[trimap == 0] = 0.0
    return alpha


def occlusion_order(instances: Instances) -> list[int]:
    """Instance indices front to back: each pair of touching or overlapping instances as
    :func:`cartoonseg.occlusion.in_front` orders them from their soft masks with ``seam="shape"`` (the one home of
    that decision, shared with style editing and the puppet): where two soft masks overlap, the one clearly more
    confident there is in front; masks that only meet along a seam (their 0.5 levels at most 5 px apart; the usual
    case: the segmenter's mask of the back instance stops where the front one begins, and both ramp there alike, so
    their confidences there differ by noise) are ordered by shape: the one that wraps around the seam is behind.
    Pairs no cue orders, and cycles, go by higher score, then lower index."""
    n = len(instances)
    if n < 2:
        return list(range(n))
    scores = instances.scores.float().cpu().tolist()
    back_first = sorted(range(n), key=lambda i: (scores[i], -i))  # the fallback, back to front
    return _occlusion_order(back_first, mask_windows(instances.masks.float().cpu()), seam="shape")[::-1]


def compose_front_to_back(alphas: Tensor, order: Sequence[int]) -> Tensor:
    """Make mattes ``[N,H,W]`` consistent: visiting ``order`` (front first), each matte is multiplied by what the
    mattes before it leave uncovered. The result sums to at most 1 per pixel."""
    out = torch.zeros_like(alphas, dtype=torch.float32)
    if alphas.shape[0] == 0:
        return out
    remaining = torch.ones(alphas.shape[1:], dtype=torch.float32, device=alphas.device)
    for i in order:
        out[i] = alphas[i].float().clamp(0, 1) * remaining
        remaining = (remaining - out[i]).clamp_(min=0.0)
    return out


def _crop(mask: np.ndarray, pad: int, h: int, w: int) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return (max(0, int(ys.min()) - pad), min(h, int(ys.max()) + 1 + pad),
            max(0, int(xs.min()) - pad), min(w, int(xs.max()) + 1 + pad))


def _seam_ridges_of(i: int, soft_all: np.ndarray, reach: np.ndarray, box: tuple[int, int, int, int], rgb: np.ndarray,
                    unknown: np.ndarray, band: int, radius: int, noise: float, low: float) -> np.ndarray | None:
    """:func:`seam_ridges` of instance ``i`` in its crop ``box``: along where another instance's mask meets its
    unknown band (both supports within ``band`` px); None where no other mask reaches the crop."""
    y0, y1, x0, x1 = box
    own = soft_all[i, y0:y1, x0:x1]
    if not ((reach[y0:y1, x0:x1] - (own > low)) > 0).any():
        return None
    other = np.zeros_like(own)
    for j in range(soft_all.shape[0]):
        if j != i:
            np.maximum(other, soft_all[j, y0:y1, x0:x1], out=other)
    near = disk(max(1, int(band)))
    zone = (cv2.dilate((own > low).astype(np.uint8), near).astype(bool)
            & cv2.dilate((other > low).astype(np.uint8), near).astype(bool) & unknown)
    if not zone.any():
        return None
    return seam_ridges(rgb[y0:y1, x0:x1], own, other, zone, radius, noise)


def _behind_interior(i: int, order: Sequence[int], soft_all: np.ndarray, low: float, high: float, depth: int,
                     radius: int) -> np.ndarray:
    """bool ``[H,W]``: where an instance behind instance ``i`` (later in the front-to-back ``order``) reaches, more
    than ``depth`` px from its silhouette's edge against anything but ``i`` (its outline and ramp lie within).
    Line art there that leaves instance ``i`` is drawn over the back instance, so it is ``i``'s (its hair strands
    crossing the character behind it); along the seam with ``i`` the back instance's edge is where ``i`` covers it,
    not its outline, so the zone reaches up to ``i``. Dips of the back mask under a thin stroke across it (the
    segmenter's mask of what stays visible) are closed first (a disk of the line art's ``radius`` + 1 px: no wider,
    or the notch of background between the two silhouettes where they meet closes and the back instance's outline
    there joins the zone), or a strand would cut its own way. And only where the back instance's mask gives way
    (below ``high``): its mask holds what is visible of it, so it dips under a stroke drawn over it and not under
    its own line art (a fold ending where ``i`` covers it, which the zone alone would hand to ``i``)."""
    h, w = soft_all.shape[1:]
    out = np.zeros((h, w), bool)
    behind = order[order.index(i) + 1:]
    own = soft_all[i] > low
    near = _crop(own, 2 * depth + 2, h, w)
    if not behind or near is None:
        return out
    y0, y1, x0, x1 = near
    pad = 2 * depth + 2  # the zone of a back instance is decided by its silhouette beyond the crop too
    b0, b1, a0, a1 = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
    mine = own[b0:b1, a0:a1]
    closing = disk(max(1, int(radius)) + 1)
    for j in behind:
        theirs = soft_all[j, b0:b1, a0:a1] > low
        if not (theirs[y0 - b0:y1 - b0, x0 - a0:x1 - a0]).any():
            continue
        covered = cv2.morphologyEx((theirs | mine).astype(np.uint8), cv2.MORPH_CLOSE, closing,
                                   borderType=cv2.BORDER_REPLICATE)
        theirs = cv2.morphologyEx(theirs.astype(np.uint8), cv2.MORPH_CLOSE, closing,
                                  borderType=cv2.BORDER_REPLICATE).astype(bool)
        # distance to the nearest pixel that neither covers (the background or a third instance; the image border
        # is no edge: a character cut by it has no outline there)
        dist = cv2.distanceTransform(covered, cv2.DIST_L2, 3)
        out[b0:b1, a0:a1] |= theirs & (dist > depth) & (soft_all[j, b0:b1, a0:a1] < high)
    return out


def _rooted_elsewhere(i: int, strokes: np.ndarray, line: np.ndarray, soft_all: np.ndarray, high: float,
                      depth: int, radius: int, here: bool = False) -> np.ndarray:
    """bool ``[H,W]``: the strokes (8-connected components of ``strokes``, instance ``i``'s :func:`free_strokes`)
    rooted in another instance: followed along the line art ``line`` past their end (8-connected) into the mask
    (its 0.5 level) and on, they run farther than ``depth`` px (the band plus the line width, as in
    :func:`_behind_interior`: its outline and the mask's uncertainty lie within) from its edge, at pixels where that
    mask holds (``>= high``). Each leg, from the stroke's end to the mask's edge and from there to ``depth``, may take
    no more steps than going straight takes plus half of it again for a curve (so not along an outline to some other
    line); the depth is counted from the mask's edge, not from the stroke's end (which lies ``band`` px outside its
    own mask: counted from there a strand of ``i`` rooted straight in its own mask reached ``depth`` only by chance). A mask holds what is visible of its instance: it holds under the instance's own lines
    and gives way under a line drawn over it. Such a stroke is a hair strand of a character beside or behind ``i``,
    lost by the segmenter over the background, that touches ``i``: ``i`` followed it too, and as the front one of
    the two took it. A line that only meets another instance's outline reaches no deeper than the outline, and a
    stroke of ``i`` drawn over another instance runs where that mask gives way: neither is dropped. Dips of a mask
    under a thin line are closed (a disk of ``radius`` + 1 px) before the depth is measured, as in
    :func:`_behind_interior`. ``here``: the converse, the strokes rooted in instance ``i``'s own mask (deep, where
    it holds): ``i``'s own strands, whose owner is certain (:func:`_ink_alpha`)."""
    h, w = strokes.shape
    out = np.zeros((h, w), bool)
    limit = int(1.5 * int(depth)) + 2  # steps per leg: the stroke's end to the mask's edge, the edge to ``depth``
    box = _crop(strokes, 2 * limit + int(depth) + 2, h, w)  # the edges within ``depth`` of what the strokes reach
    if box is None:
        return out
    y0, y1, x0, x1 = box
    mine, path = strokes[y0:y1, x0:x1], line[y0:y1, x0:x1] | strokes[y0:y1, x0:x1]
    closing = disk(max(1, int(radius)) + 1)
    rooted = np.zeros(mine.shape, bool)  # line art deep inside another instance, where its mask holds
    inside = np.zeros(mine.shape, bool)  # line art inside those masks (their closed 0.5 level): where depth counts
    for j in range(soft_all.shape[0]):
        theirs = soft_all[j, y0:y1, x0:x1]
        if (j == i) != here or not (theirs >= high).any():
            continue
        solid = cv2.morphologyEx((theirs > 0.5).astype(np.uint8), cv2.MORPH_CLOSE, closing,
                                 borderType=cv2.BORDER_REPLICATE)
        inside |= path & solid.astype(bool)
        rooted |= path & (cv2.distanceTransform(solid, cv2.DIST_L2, 3) > depth) & (theirs >= high)
    if not rooted.any():
        return out
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mine.astype(np.uint8), connectivity=8)
    reach = 2 * limit + 1
    for k in range(1, n):  # each stroke in its own box, so many short strokes cost no full-crop pass each
        left, top, wide, tall = (int(v) for v in stats[k, :4])
        c0, c1 = max(0, top - reach), min(mine.shape[0], top + tall + reach)
        d0, d1 = max(0, left - reach), min(mine.shape[1], left + wide + reach)
        stroke, free = labels[c0:c1, d0:d1] == k, path[c0:c1, d0:d1]
        entry = inside[c0:c1, d0:d1] & (_geodesic_steps(stroke, free, limit, connectivity=8) <= limit)
        if entry.any() and (rooted[c0:c1, d0:d1] & (_geodesic_steps(entry, free, limit, connectivity=8)
                                                     <= limit)).any():
            out[y0 + c0:y0 + c1, x0 + d0:x0 + d1] |= stroke
    return out


def _drawn_over(i: int, strokes: np.ndarray, line: np.ndarray, soft_all: np.ndarray, high: float, depth: int,
                radius: int) -> np.ndarray:
    """bool ``[H,W]``: the strokes (8-connected components of ``strokes``, instance ``i``'s :func:`free_strokes`)
    whose line runs on (8-connected, along ``line`` only, not through its other strokes; as far as in
    :func:`_rooted_elsewhere`) deeper than ``depth`` px into ``i``'s own mask at pixels where that mask gives way
    (``low`` < p < ``high``): a strand drawn over ``i`` (a mask gives way under a line drawn over its instance, not
    under its own), so another character's, lost over the background where it touches ``i``: the mirror of
    :func:`_rooted_elsewhere`. Without it both followed the strand and ``i`` kept what the front one left of it.
    Given a front instance's strokes and a back instance ``i``, the same test finds the front's strands drawn over
    ``i``, whose owner is then certain (:func:`instance_alphas` gives them :func:`_ink_alpha`)."""
    h, w = strokes.shape
    out = np.zeros((h, w), bool)
    limit = int(1.5 * int(depth)) + 2
    box = _crop(strokes, limit + int(depth) + 2, h, w)
    if box is None:
        return out
    y0, y1, x0, x1 = box
    mine, own = strokes[y0:y1, x0:x1], soft_all[i, y0:y1, x0:x1]
    solid = cv2.morphologyEx((own > 0.5).astype(np.uint8), cv2.MORPH_CLOSE, disk(max(1, int(radius)) + 1),
                             borderType=cv2.BORDER_REPLICATE)
    deep = line[y0:y1, x0:x1] & (cv2.distanceTransform(solid, cv2.DIST_L2, 3) > depth) & (own < high) & (own > 0.05)
    if not deep.any():
        return out
    n, labels = cv2.connectedComponents(mine.astype(np.uint8), connectivity=8)
    for k in range(1, n):
        stroke = labels == k
        path = (line[y0:y1, x0:x1] & ~mine) | stroke
        if (deep & (_geodesic_steps(stroke, path, limit, connectivity=8) <= limit)).any():
            out[y0:y1, x0:x1] |= stroke
    return out


def _ink_alpha(rgb: np.ndarray, strokes: np.ndarray, grow: np.ndarray, background: np.ndarray,
               radius: int, line: np.ndarray | None = None, reach: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Alpha of traced strokes from their own ink colour: ``(alpha, where)``, float64 and bool ``[H,W]``.

    ``strokes``: the stroke pixels an instance follows past its region; ``grow``: them and their 1-px fringe (the
    pixels to estimate); ``background``: known-background pixels that are no line art. Closed-form matting cannot
    put an ownership step along a line of one colour (alpha is affine in colour in each 3x3 window), so a stroke
    joining this instance's foreground to a known-background pixel of the same ink (another instance's outline
    where the stroke meets it, the back character's fill where it ends over it) came out as a ramp from 1 to 0
    (about half its alpha). Which instance the stroke belongs to is already decided (the stroke rules); its
    coverage is the projection of each pixel's colour onto the line from its background ``B`` to the stroke's ink
    ``F``, per 8-connected group of ``grow``: ``alpha = <I - B, F - B> / |F - B|^2``. ``B`` is the sample of
    ``background`` within twice the smoothing scale that best explains the pixel as such a mix
    (:func:`_sampled_alpha`: the strand's background on the pixel's own side, where two colours meet under it, the
    back character's hair and body under a front strand); where there is none, the local background (a normalised
    Gaussian average of ``background`` around it; it also sets the ink's direction). Pixels with no background
    nearby, or whose ink is within the line-art contrast of the background, are left to the solver (``where``
    False).

    The ink: a strand thinner than a pixel never covers one fully, so its own pixel farthest from ``B`` is lighter
    than its ink (a 0.5-px strand read alpha ~0.9 on its core, truth 0.6). A thin line's colours cannot tell a
    lighter ink from a thinner line; the drawing can: the strand is the continuation of line art drawn in one ink,
    and where that line art is wide (its root, the outline it leaves) a pixel is fully covered. So ``F`` is the
    farthest colour, along the direction from ``B`` to the stroke's own farthest pixel, among the pixels of ``line``
    (bool ``[H,W]``: the line art) reached from the stroke along it within ``reach`` 8-connected steps, and of
    the same ink: within ``INK_ANGLE`` of that direction (a brown strand leaving a dark purple outline keeps its
    own pixel). Without ``line`` the stroke's own farthest pixel is the ink."""
    image = np.asarray(rgb, dtype=np.float64) / 255.0
    alpha = np.zeros(strokes.shape, np.float64)
    where = np.zeros(strokes.shape, bool)
    sigma = float(max(2, int(radius) + 1))
    weight = cv2.GaussianBlur(background.astype(np.float64), (0, 0), sigma)
    known = weight > 1e-3
    if not known.any():
        return alpha, where
    back = cv2.GaussianBlur(image * background[..., None], (0, 0), sigma) / np.maximum(weight, 1e-3)[..., None]
    diff = image - back
    n, labels = cv2.connectedComponents(grow.astype(np.uint8), connectivity=8)
    for k in range(1, n):
        part = labels == k
        ink = part & strokes & known
        if not ink.any():
            continue
        ys, xs = np.nonzero(ink)
        far = int(np.argmax((diff[ys, xs] ** 2).sum(-1)))
        f = image[ys[far], xs[far]]
        if line is not None and reach > 0:  # the same ink where the line art it continues is wide
            seed = part & strokes
            steps = _geodesic_steps(seed, line | seed, int(reach), connectivity=8)
            d0 = f - back[ys[far], xs[far]]
            norm0 = float((d0 ** 2).sum())
            cand = image[(steps <= int(reach)) & line] - back[ys[far], xs[far]]
            if norm0 > 0 and cand.size:
                t = cand @ d0 / norm0  # how far along the stroke's ink direction, in units of its own far pixel
                perp = np.sqrt(np.maximum((cand ** 2).sum(-1) - t * t * norm0, 0.0))
                same = (t > 1.0) & (perp <= np.tan(INK_ANGLE) * t * np.sqrt(norm0))
                if same.any():
                    f = back[ys[far], xs[far]] + d0 * float(t[same].max())
        span = f - back  # per pixel: the ink relative to the local background
        norm = (span ** 2).sum(-1)
        ok = part & known & (norm > 0.05 ** 2)
        alpha[ok] = np.clip((diff[ok] * span[ok]).sum(-1) / norm[ok], 0.0, 1.0)
        sampled, found = _sampled_alpha(image, background, ok, f, int(2 * sigma))
        alpha[found] = sampled[found]
        where |= ok
    return alpha, where


def _sampled_alpha(image: np.ndarray, background: np.ndarray, pixels: np.ndarray, ink: np.ndarray,
                   r: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage by the colour ``ink`` of the ``pixels`` (bool ``[H,W]``) of ``image`` (float ``[H,W,3]``) over a
    background sampled from the known ``background`` pixels within ``r`` px: per pixel, the sample that best
    explains its colour as a mix ``alpha ink + (1 - alpha) B`` (least squared residual, plus the 8-bit quantisation
    variance per squared pixel of distance, so the nearest of equally good samples). A thin strand has background
    on both sides, and over a character behind it that may be two colours (its hair and body meeting under the
    strand); an average of both sides made the pixels on either side a mix of neither. ``(alpha, found)``: where no
    sample with a colour distinct from the ink lies within ``r``, ``found`` is False."""
    h, w = background.shape
    ys, xs = np.nonzero(pixels)
    colour = image[ys, xs]
    best = np.full(len(ys), np.inf)
    picked = np.zeros(len(ys))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx > r * r:
                continue
            yy, xx = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
            b = image[yy, xx]
            span = ink - b
            norm = (span ** 2).sum(-1)
            usable = (yy == ys + dy) & (xx == xs + dx) & background[yy, xx] & (norm > 0.05 ** 2)
            a = np.clip(((colour - b) * span).sum(-1) / np.maximum(norm, 1e-12), 0.0, 1.0)
            cost = ((colour - b - a[:, None] * span) ** 2).sum(-1) + QUANTISATION_VARIANCE * (dy * dy + dx * dx)
            better = usable & (cost < best)
            best[better], picked[better] = cost[better], a[better]
    alpha = np.zeros(pixels.shape, np.float64)
    found = np.zeros(pixels.shape, bool)
    alpha[ys, xs], found[ys, xs] = picked, np.isfinite(best)
    return alpha, found


def instance_alphas(image, instances: Instances, config: MattingConfig | None = None, *,
                    order: Sequence[int] | None = None,
                    progress: Callable[[int, int], None] | None = None, name: str | None = None) -> Instances:
    """Alpha mattes of every instance (see the module docstring).

    Args:
        image: the RGB image the instances belong to (anything :func:`cartoonseg.io.to_rgb_uint8` accepts).
        instances: instances with refined soft masks (``Instances.masks``).
        config: trimap / solver settings.
        order: front-to-back instance order; None = :func:`occlusion_order`.
        progress: ``progress(done, total)`` before the first instance and after each one (one solve each); raise
            from it to stop (a cancel).
        name: what the image is called in warnings (a file name, ``"frame 3"``), so that the same instance
            index in several images does not read as one warning.

    An instance with nothing to solve from keeps its soft mask, with a ``UserWarning`` naming it: no certain
    interior beyond the unknown band (an instance narrower than the band), no background in its crop, or an
    image thinner than the solvers' 3x3 window. Uncertain *areas* of a mask (:func:`wide_uncertain`: a veil the
    mask holds at ~0.5) keep the soft mask on their pixels only; the rest of the instance is matted.

    Returns:
        A copy of ``instances`` with ``alphas`` float32 ``[N,H,W]`` (sum <= 1 per pixel).
    """
    config = config or MattingConfig()
    rgb = to_rgb_uint8(image)
    h, w = rgb.shape[:2]
    if instances.image_size != (h, w):
        raise ValueError(f"image is {h}x{w} but the instance masks are {instances.image_size[0]}x{instances.image_size[1]}")
    n = len(instances)
    raw = torch.zeros(n, h, w, dtype=torch.float32)
    soft_all = instances.masks.float().clamp(0, 1).cpu().numpy()
    lines: dict[int, np.ndarray] = {}  # the image's line art per black-hat radius
    # per pixel, how many instances' masks reach it: "another instance's mask" without an [N-1,H,W] copy per instance
    reach = (soft_all > config.low).sum(0, dtype=np.int32) if config.line_art else None
    if order is None:
        order = occlusion_order(instances)
    if sorted(int(i) for i in order) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0..{n - 1}, got {list(order)}")
    order = [int(i) for i in order]
    if progress is not None:
        progress(0, n)
    for i in range(n):
        if progress is not None and i:
            progress(i, n)
        soft = soft_all[i]
        box = _crop(soft > config.low, 0, h, w)
        if box is None:
            continue
        y0, y1, x0, x1 = _crop(soft > config.low, 2, h, w)
        width, veil = _transition(soft[y0:y1, x0:x1], config.low, config.high)
        keep = np.zeros((h, w), bool)  # an uncertain area, not an edge: its pixels keep the soft mask
        keep[y0:y1, x0:x1] = veil
        band = config.band
        if band is None:
            band = max(3, round(2 * width))
        y0, y1, x0, x1 = _crop(soft > config.low, int(band) + int(config.margin), h, w)
        trimap = trimap_from_soft(soft[y0:y1, x0:x1], int(band), config.low, config.high)
        epsilon = config.epsilon
        if epsilon is None:  # the noise where the boundary is (before any stroke widens the unknown region)
            epsilon = max(QUANTISATION_VARIANCE, noise_variance(rgb[y0:y1, x0:x1], (trimap > 0) & (trimap < 1)))
        traced = None  # the strokes followed past the region, for :func:`_ink_alpha`
        if config.line_art:
            # the black-hat follows the width of the image's lines, at most half the band (a band narrower than
            # the line art cannot hold it); the detour that decides a gap's sides follows the band's width
            largest = max(2, int(band) // 2)
            unknown = (trimap > 0) & (trimap < 1)
            radius = line_radius(rgb[y0:y1, x0:x1], unknown, config.line_contrast, largest)
            ridges = _seam_ridges_of(i, soft_all, reach, (y0, y1, x0, x1), rgb, unknown, band, radius, epsilon,
                                     config.low)
            trimap = snap_to_outlines(rgb[y0:y1, x0:x1], trimap, radius, config.line_contrast, lead=4 * largest,
                                      ridges=ridges)
            if radius not in lines:
                lines[radius] = line_art(rgb, radius, config.line_contrast)
            region = np.zeros((h, w), bool)
            region[y0:y1, x0:x1] = trimap > 0
            # line art another instance's mask explains, except over the instances behind this one away from their
            # own silhouette: there a stroke leaving this one (its hair strands over the back character) is its own
            behind = _behind_interior(i, order, soft_all, config.low, config.high, int(band) + radius, radius)
            others = ((reach - (soft > config.low)) > 0) & ~behind
            strokes = free_strokes(lines[radius] & ~others, region)
            if strokes.any():  # a lost strand of another instance touching this one is that one's
                strokes &= ~_rooted_elsewhere(i, strokes, lines[radius], soft_all, config.high,
                                              int(band) + radius, radius)
            if strokes.any():  # and one drawn over this instance (its mask gives way under it) is not its own
                strokes &= ~_drawn_over(i, strokes, lines[radius], soft_all, config.high, int(band) + radius, radius)
            if strokes.any():  # unknown along the strokes (1-px fringe): widen the crop to hold them
                grow = cv2.dilate(strokes.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~region
                g0, g1, f0, f1 = _crop(grow, int(config.margin), h, w)
                box = (min(y0, g0), max(y1, g1), min(x0, f0), max(x1, f1))
                wide = np.zeros((box[1] - box[0], box[3] - box[2]))
                wide[y0 - box[0]:y1 - box[0], x0 - box[2]:x1 - box[2]] = trimap
                wide[grow[box[0]:box[1], box[2]:box[3]]] = 0.5
                trimap, (y0, y1, x0, x1) = wide, box
                # the strands rooted deep in this instance's own mask are its own for certain: their alpha is their
                # coverage by their ink (the solver makes a strand that meets another instance's line a ramp)
                own = strokes & _rooted_elsewhere(i, strokes, lines[radius], soft_all, config.high,
                                                  int(band) + radius, radius, here=True)
                # and so are those drawn over a character behind (they run deep into its mask where it gives way)
                for j in order[order.index(i) + 1:]:
                    if (strokes & ~own).any():
                        own |= strokes & _drawn_over(j, strokes & ~own, lines[radius], soft_all, config.high,
                                                     int(band) + radius, radius)
                if own.any():
                    near = cv2.dilate(own.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & grow
                    traced = (own[y0:y1, x0:x1], near[y0:y1, x0:x1],
                              (trimap == 0) & ~lines[radius][y0:y1, x0:x1], radius, lines[radius][y0:y1, x0:x1],
                              int(1.5 * (int(band) + radius)) + 2)
        why = None  # nothing to solve from: keep the mask
        if min(y1 - y0, x1 - x0) < MIN_SIDE:
            why = f"the image is thinner than the solvers' {MIN_SIDE}x{MIN_SIDE} window"
        elif not (trimap == 1).any():
            why = (f"its mask has no certain interior (>= {config.high}) beyond the {int(band)}-px unknown band "
                   "(an instance narrower than the band; a smaller band may help)")
        elif not (trimap == 0).any():
            why = "its mask covers its whole crop (no background to solve from)"
        if why is not None:
            warnings.warn(f"matting{' ' + name if name else ''}: instance {i} keeps its soft mask (no alpha solved): "
                          f"{why}", stacklevel=2)
            alpha = soft[y0:y1, x0:x1].astype(np.float64)
        else:
            alpha = solve_alpha(rgb[y0:y1, x0:x1], trimap, config.method, epsilon)
            if traced is not None:  # the strokes followed past the region: coverage by their own ink
                ink, where = _ink_alpha(rgb[y0:y1, x0:x1], *traced)
                alpha[where] = ink[where]
            area = keep[y0:y1, x0:x1]
            alpha[area] = soft[y0:y1, x0:x1][area]
        raw[i, y0:y1, x0:x1] = torch.from_numpy(alpha.astype(np.float32))
    if progress is not None and n:
        progress(n, n)
    alphas = compose_front_to_back(raw, order)
    return instances.replace(alphas=alphas.to(instances.device))


def unmix(image, alpha) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background colours of an image under one matte: ``(F, B)``, float32 ``[H,W,3]`` in [0,1]
    with ``image ~ alpha F + (1 - alpha) B`` (the one-layer case of the layer model in :mod:`cartoonseg.compositing`,
    estimated when neither the foreground nor the background is known).

    ``image``: RGB ``[H,W,3]``, uint8 or float in [0,1]; ``alpha``: ``[H,W]`` in [0,1]. Where the matte is
    fractional, both come from pymatting's ``estimate_foreground_ml`` over the box of the fractional pixels plus
    8 px of context, with its smoothness where alpha changes lowered to ``FOREGROUND_GRADIENT_WEIGHT`` (at
    pymatting's default the fill's colour spreads into a thin dark outline: on drawn characters with known colours
    its estimated luminance came out ~0.09 lighter where alpha is fractional; the colour-matching term decides); elsewhere (and where that box is thinner than the estimator's 3x3 window) both are the image.
    What the applications cut out with a matte: ``F`` is the character's colour without the old background mixed
    in (a moved layer carries no halo), ``B`` what lies behind its half-transparent edge in the input.
    """
    raw = np.asarray(image)
    rgb = raw.astype(np.float64) / 255.0 if raw.dtype == np.uint8 else raw.astype(np.float64)
    a = np.clip(np.nan_to_num(np.asarray(alpha, dtype=np.float64), nan=0.0), 0.0, 1.0)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or a.shape != rgb.shape[:2]:
        raise ValueError(f"need an image [H,W,3] and a matte [H,W] of its size, got {rgb.shape} and {a.shape}")
    fg = rgb.astype(np.float32)
    bg = fg.copy()
    frac = (a > 0) & (a < 1)
    box = _crop(frac, 8, *a.shape) if frac.any() else None
    if box is None or min(box[1] - box[0], box[3] - box[2]) < MIN_SIDE:  # the estimator divides by zero there
        return fg, bg
    y0, y1, x0, x1 = box
    f, b = _pymatting().estimate_foreground_ml(rgb[y0:y1, x0:x1], a[y0:y1, x0:x1], return_background=True,
                                               gradient_weight=FOREGROUND_GRADIENT_WEIGHT)
    sel = frac[y0:y1, x0:x1]
    fg[y0:y1, x0:x1][sel] = np.clip(np.asarray(f), 0.0, 1.0)[sel]
    bg[y0:y1, x0:x1][sel] = np.clip(np.asarray(b), 0.0, 1.0)[sel]
    return fg, bg


def cutouts(image, instances: Instances) -> list[np.ndarray]:
    """Per instance an RGBA uint8 ``[H,W,4]`` cut-out: colours = the estimated foreground colours where the matte
    is fractional (:func:`unmix`, so no background fringe), the image elsewhere; alpha = ``instances.alphas`` (or
    the soft masks when no mattes were computed)."""
    rgb = to_rgb_uint8(image)
    alphas = instances.alphas if instances.alphas is not None else instances.masks
    out = []
    for a in alphas.float().clamp(0, 1).cpu().numpy():
        colour = rgb
        if ((a > 0) & (a < 1)).any():
            fg, _ = unmix(rgb, a)
            colour = np.clip(fg.astype(np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        out.append(np.dstack([colour, np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)]))
    return out
