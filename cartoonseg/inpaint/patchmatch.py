"""Background inpainting: a vectorised multi-scale PatchMatch and OpenCV Telea (background masks: :mod:`cartoonseg.ops`).

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943), §6.1 3D Ken Burns:
the characters are removed with PatchMatch (patch size 3) and the result is refined by latent diffusion.
The original code called the compiled PyPatchMatch library; this module is an original pure-PyTorch
re-implementation of the same family of methods:

* PatchMatch nearest-neighbour fields (Barnes et al., SIGGRAPH 2009): random initialisation, propagation from
  neighbours and random search in shrinking windows. Here every step runs for all target patches at once
  (Jacobi-style propagation instead of the sequential scan order), so it vectorises in torch.
* Multi-scale expectation-maximisation completion (Wexler, Shechtman and Irani, PAMI 2007): on each level of a
  coarse-to-fine pyramid, alternate "find the nearest known patch for every patch overlapping the hole" and
  "vote every hole pixel as the similarity-weighted mean of the overlapping patches' colours". Large holes
  get texture from the coarse levels instead of the smear of diffusion-type fills.

Source patches are only ever taken from patches lying fully in the known region (at every pyramid level, where
a coarse pixel counts as known only if all its fine pixels are), so colours under the hole (the characters)
can never leak into the fill. Known pixels of the result are exactly those of the input.

Tensor conventions: images are ``[H,W,3]`` RGB (numpy ``uint8`` or torch float in ``[0,1]``/uint8); masks are
``[H,W]`` with **white / true / > 0.5 = fill**, read by :func:`cartoonseg.io.to_float_mask` (uint8 and other
integers 0..255, or 0/1 when they hold only 0 and 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import to_float_image, to_float_mask, to_rgb_uint8
from ..ops import background_mask, grow_mask  # background_mask: re-exported (its home is ops)

__all__ = [
    "INPAINT_METHODS",
    "PatchMatchConfig",
    "background_mask",
    "fill_method",
    "inpaint",
    "patchmatch_inpaint",
    "telea_inpaint",
]

INPAINT_METHODS: tuple[str, ...] = ("patchmatch", "telea")


@dataclasses.dataclass(frozen=True)
class PatchMatchConfig:
    """Parameters of :func:`patchmatch_inpaint` (defaults are the ones the tests and benchmark use).

    Attributes:
        patch_size: odd patch side in pixels (the paper/original code uses 3).
        min_size: the pyramid stops before the shorter image side drops below this many pixels.
        em_iters_coarse: EM (search + vote) iterations on the coarsest level.
        em_iters_fine: EM iterations on the finest level (levels in between interpolate linearly).
        pm_iters: PatchMatch propagation + random-search rounds inside each EM iteration.
        search_ratio: random-search window shrink factor (Barnes et al.: 0.5).
        fine_search_radius: largest random-search radius on levels other than the coarsest (which searches
            the whole image); the field there starts from the upsampled coarse field, so local search suffices.
        max_levels: cap on the number of pyramid levels (0 = as many as ``min_size`` allows).
    """

    patch_size: int = 3
    min_size: int = 24
    em_iters_coarse: int = 8
    em_iters_fine: int = 2
    pm_iters: int = 2
    search_ratio: float = 0.5
    fine_search_radius: float = 32.0
    max_levels: int = 0

    def __post_init__(self) -> None:
        if (isinstance(self.patch_size, bool) or not isinstance(self.patch_size, (int, np.integer))
                or self.patch_size < 3 or self.patch_size % 2 == 0 or self.patch_size > 15):
            raise ValueError(f"patch_size must be an odd integer in [3, 15], got {self.patch_size}")
        if self.min_size < 2 * self.patch_size:
            raise ValueError(f"min_size must be >= 2*patch_size ({2 * self.patch_size}), got {self.min_size}")
        if self.em_iters_coarse < 1 or self.em_iters_fine < 1 or self.pm_iters < 1:
            raise ValueError("em_iters_coarse, em_iters_fine and pm_iters must be >= 1")
        if not 0.0 < self.search_ratio < 1.0:
            raise ValueError(f"search_ratio must lie in (0,1), got {self.search_ratio}")
        if self.max_levels < 0:
            raise ValueError(f"max_levels must be >= 0, got {self.max_levels}")


def _with_patch_size(config: PatchMatchConfig | None, patch_size: int) -> PatchMatchConfig:
    """``config`` (default :class:`PatchMatchConfig`) with ``patch_size``; the pyramid's ``min_size`` grows to twice
    the patch where it is smaller, so every allowed patch size (odd, 3..15) runs."""
    cfg = config or PatchMatchConfig()
    return dataclasses.replace(cfg, patch_size=patch_size, min_size=max(cfg.min_size, 2 * int(patch_size)))


# ---------------------------------------------------------------------------------------------- I/O helpers
def _image_to_float(image) -> tuple[Tensor, str]:
    """Any supported image -> (float32 [H,W,3] in 0..255 on CPU, kind) where kind restores the input type; the
    input policy (grey, alpha, NaN -> 0) is :func:`cartoonseg.io.to_float_image`."""
    if isinstance(image, np.ndarray):
        kind = "numpy_uint8" if image.dtype == np.uint8 else "numpy_float"
    elif isinstance(image, Tensor):
        kind = "torch_uint8" if image.dtype == torch.uint8 else "torch_float"
    else:
        raise TypeError(f"image must be a numpy array or torch tensor [H,W,3], got {type(image).__name__}")
    if kind.endswith("uint8"):  # exact 0..255 values
        return torch.tensor(to_rgb_uint8(image), dtype=torch.float32), kind  # a copy: the array may be read-only
    return to_float_image(image, nan="zero") * 255.0, kind


def _float_to_kind(t: Tensor, kind: str, image, hole: Tensor):
    """A fill ``t`` (float32 ``[H,W,3]`` in 0..255) back in the input's type (``kind``): the pixels under ``hole``
    from ``t``, every other pixel exactly as the input policy reads ``image`` (a float input is not scaled to
    0..255 and back, which moves values by an ulp: the known pixels come out bit-identical)."""
    if kind == "numpy_uint8":
        return t.round().clamp(0, 255).to(torch.uint8).numpy()
    if kind == "torch_uint8":
        return t.round().clamp(0, 255).to(torch.uint8)
    out = to_float_image(image, nan="zero")
    out[hole] = (t[hole] / 255.0).clamp(0, 1)
    return out.numpy() if kind == "numpy_float" else out


def _mask_to_bool(mask, shape: tuple[int, int] | None) -> Tensor:
    """A mask in any accepted encoding as bool ``[H,W]`` (True = fill); ``shape`` (H, W): the size it must have."""
    if isinstance(mask, np.ndarray):
        m = torch.from_numpy(np.array(mask, copy=True))
    elif isinstance(mask, Tensor):
        m = mask.detach().cpu()
    else:
        raise TypeError(f"mask must be a numpy array or torch tensor [H,W], got {type(mask).__name__}")
    if m.dim() == 3 and m.shape[-1] in (1, 3, 4):
        m = m[..., 0]
    if m.dim() == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2:
        raise ValueError(f"mask must be [H,W], got shape {tuple(m.shape)}")
    if shape is not None and tuple(m.shape) != tuple(shape):
        raise ValueError(f"mask size {tuple(m.shape)} does not match image size {tuple(shape)}")
    if m.dtype == torch.bool:
        return m.clone()
    return to_float_mask(m) > 0.5  # io's one mask rule: uint8 255 (or a 0/1 integer mask's 1) = fill


# ---------------------------------------------------------------------------------------------- PatchMatch core
def _shrink_known(known: Tensor) -> Tensor:
    """Halve a bool mask: a coarse pixel is set only if all its fine pixels are."""
    den = F.avg_pool2d(known.float()[None, None], 2, ceil_mode=True, count_include_pad=False)
    return den[0, 0] >= 1.0 - 1e-6


def _downsample(img: Tensor, hole: Tensor) -> tuple[Tensor, Tensor]:
    """Halve a level: a coarse pixel is known only if all its fine pixels are (no colour from the hole)."""
    known = (~hole).float()[None, None]
    x = img.permute(2, 0, 1)[None] * known
    num = F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
    den = F.avg_pool2d(known, 2, ceil_mode=True, count_include_pad=False)
    coarse_hole = den[0, 0] < 1.0 - 1e-6
    coarse = (num / den.clamp_min(1e-6))[0].permute(1, 2, 0).contiguous()
    coarse[coarse_hole] = 0.0
    return coarse, coarse_hole


_JUMP = 4  # the largest propagation jump
_VOTE_CHUNK = 1 << 21  # (patch offset, hole pixel) pairs one vote step gathers at once
#: propagation steps (dy, dx): the 4 neighbours at jumps 4, 2, 1, in this order
_PROPAGATION: tuple[tuple[int, int], ...] = tuple(
    d for jump in (_JUMP, _JUMP // 2, 1) for d in ((0, jump), (0, -jump), (jump, 0), (-jump, 0)))


class _Level:
    """Everything PatchMatch needs on one pyramid level (flat indices are ``y * W + x``)."""

    def __init__(self, img: Tensor, hole: Tensor, patch: int, source: Tensor | None = None) -> None:
        self.h, self.w = hole.shape
        self.patch = patch
        self.r = patch // 2
        self.img = img.clone()
        self.hole = hole
        self.target = grow_mask(hole, patch // 2)  # patches that overlap the hole
        # allowed sources: patches lying fully in the known region (and in the source region, if one is given)
        self.valid = ~self.target if source is None else ~grow_mask(hole | ~source, patch // 2)
        self.t_idx = self.target.flatten().nonzero().flatten()
        self.ty = self.t_idx // self.w
        self.tx = self.t_idx % self.w
        self.v_idx = self.valid.flatten().nonzero().flatten()
        self.h_idx = hole.flatten().nonzero().flatten()
        offs = torch.arange(-self.r, self.r + 1)
        self.oy = offs.repeat_interleave(patch)  # patch offsets in unfold (row-major) order
        self.ox = offs.repeat(patch)
        self.feats = self._all_feats()
        # everything below depends only on the level's geometry: computed once here instead of in every one of
        # the (many, small) PatchMatch steps, whose cost is mostly per-call overhead
        n = len(self.t_idx)
        self.pos = torch.full((self.h * self.w,), -1, dtype=torch.long)  # flat index -> target row (-1: none)
        self.pos[self.t_idx] = torch.arange(n)
        # valid sources, padded with False so propagation candidates outside the flat range (by at most the
        # largest jump's rows, _JUMP * W) read False
        self.pad_n = _JUMP * self.w
        self.valid_pad = F.pad(self.valid.flatten(), (self.pad_n, self.pad_n), value=False)
        # pixel offsets of the target patches in the padded image (refresh_target_feats), flattened
        wp = self.w + 2 * self.r
        self.t_gather = ((self.ty[:, None] + self.r + self.oy[None]) * wp
                         + (self.tx[:, None] + self.r + self.ox[None])).flatten()
        # propagation: for each (dy, dx) of _PROPAGATION, the target rows whose neighbour (y - dy, x - dx) is
        # inside the level and a target itself, and that neighbour's row (a neighbour that is not a target has
        # the identity field, so it proposes the target itself, which is never a valid source)
        self.prop: list[tuple[int, int, Tensor, Tensor]] = []
        for dy, dx in _PROPAGATION:
            ny = self.ty - dy
            nx = self.tx - dx
            inside = (ny >= 0) & (ny < self.h) & (nx >= 0) & (nx < self.w)
            nb = self.pos[ny.clamp(0, self.h - 1) * self.w + nx.clamp(0, self.w - 1)]
            rows = (inside & (nb >= 0)).nonzero().flatten()
            self.prop.append((dy, dx, rows, nb[rows]))
        # voting: for each patch offset (oy, ox), the target row of the patch centred at (hole - offset) of every
        # hole pixel (clamped to row 0) and whether that patch exists (inside the level, a target)
        hy = self.h_idx // self.w
        hx = self.h_idx % self.w
        qy = hy[None] - self.oy[:, None]  # [p*p, M]
        qx = hx[None] - self.ox[:, None]
        inside = (qy >= 0) & (qy < self.h) & (qx >= 0) & (qx < self.w)
        q = self.pos[qy.clamp(0, self.h - 1) * self.w + qx.clamp(0, self.w - 1)]
        self.vote_inside = inside & (q >= 0)
        self.vote_q = q.clamp_min(0)

    def _pad(self) -> Tensor:
        x = self.img.permute(2, 0, 1)[None]
        mode = "reflect" if min(self.h, self.w) > self.r else "replicate"
        return F.pad(x, (self.r,) * 4, mode=mode)

    def _all_feats(self) -> Tensor:
        """[H*W, 3*p*p] patch vectors of the whole level (sources never change within a level)."""
        cols = F.unfold(self._pad(), self.patch)  # [1, 3*p*p, H*W]
        return cols[0].t().contiguous()

    def refresh_target_feats(self) -> None:
        """Recompute the patch vectors of the targets after the hole colours changed."""
        pad = self._pad()[0].reshape(3, -1)  # [3, (H+2r)*(W+2r)]
        vals = pad.index_select(1, self.t_gather)  # [3, N*p*p]
        tf = vals.reshape(3, -1, self.patch * self.patch).permute(1, 0, 2).reshape(len(self.t_idx), -1)
        self.feats[self.t_idx] = tf
        self.t_feats = tf.contiguous()

    def dist(self, src: Tensor, rows: Tensor | None = None) -> Tensor:
        """Sum of squared differences between target patches (all, or the target positions ``rows``) and the
        candidate source patches ``src`` (flat indices, one per target)."""
        tf = self.t_feats if rows is None else self.t_feats.index_select(0, rows)
        diff = self.feats.index_select(0, src).sub_(tf)
        return diff.square_().sum(1)


def _reflect(coord: Tensor, size: int) -> Tensor:
    if size == 1:
        return torch.zeros_like(coord)
    period = 2 * (size - 1)
    c = coord.remainder(period)
    return torch.where(c >= size, period - c, c)


def _improve(level: _Level, nnf: Tensor, dist: Tensor, cand: Tensor, rows: Tensor | None = None,
             ok: Tensor | None = None) -> None:
    """Keep the candidates ``cand`` (flat source indices, within ``level.pad_n`` of the flat range) of the target
    rows ``rows`` (default: all) where they are valid sources, differ from the current source, pass ``ok`` (if
    given) and are closer (``nnf`` and ``dist`` updated in place)."""
    cur = nnf if rows is None else nnf.index_select(0, rows)
    keep = level.valid_pad.index_select(0, cand + level.pad_n) & (cand != cur)
    if ok is not None:
        keep &= ok
    sel = keep.nonzero().flatten()
    if sel.numel() == 0:
        return
    c = cand.index_select(0, sel)
    r = sel if rows is None else rows.index_select(0, sel)
    d = level.dist(c, r)
    old = dist.index_select(0, r)
    better = d < old
    nnf.index_copy_(0, r, torch.where(better, c, cur.index_select(0, sel)))
    dist.index_copy_(0, r, torch.where(better, d, old))


def _patchmatch_rounds(
    level: _Level, nnf: Tensor, dist: Tensor, rounds: int, ratio: float, gen: torch.Generator, max_radius: float
) -> None:
    """PatchMatch on all targets in parallel: propagation from the 4 neighbours at jumps 4, 2, 1 (a jump-flood
    so offsets travel further than one pixel per round), then random search in windows shrinking from
    ``max_radius`` by ``ratio``, then one uniformly random valid source."""
    h, w = level.h, level.w
    n = len(level.t_idx)
    if n == 0:
        return
    for _ in range(rounds):
        for dy, dx, rows, nb in level.prop:
            if rows.numel() == 0:
                continue
            s = nnf.index_select(0, nb)  # the neighbour's source, shifted back by (dy, dx)
            if dx == 0:  # out of range vertically = outside the flat range, which reads invalid
                _improve(level, nnf, dist, s + dy * w, rows)
            else:
                sx = s.remainder(w) + dx
                _improve(level, nnf, dist, s + dx, rows, (sx >= 0) & (sx < w))
        radius = float(min(max(h, w), max_radius))
        while radius >= 1.0:
            sy = nnf.div(w, rounding_mode="floor")
            sx = nnf - sy * w
            ry = torch.rand(n, generator=gen).mul_(2).sub_(1).mul_(radius)
            rx = torch.rand(n, generator=gen).mul_(2).sub_(1).mul_(radius)
            cy = (sy + ry.round_().long()).clamp_(0, h - 1)
            cx = (sx + rx.round_().long()).clamp_(0, w - 1)
            _improve(level, nnf, dist, cy.mul_(w).add_(cx))
            radius *= ratio
        # one fully random valid source per round keeps far regions reachable on small levels
        pick = torch.randint(len(level.v_idx), (n,), generator=gen)
        _improve(level, nnf, dist, level.v_idx.index_select(0, pick))


def _vote(level: _Level, nnf: Tensor, dist: Tensor) -> None:
    """Each hole pixel becomes the similarity-weighted mean of its overlapping patches' source pixels."""
    h, w = level.h, level.w
    if len(level.h_idx) == 0:
        return
    positive = dist[dist > 0]
    sigma2 = float(torch.quantile(positive[: 1 << 24], 0.75)) if positive.numel() else 1.0
    weight = torch.exp(-dist / (2.0 * max(sigma2, 1e-6)))
    flat_img = level.img.reshape(-1, 3)
    m = len(level.h_idx)
    acc = torch.zeros(m, 3)
    wsum = torch.zeros(m)
    step = max(1, _VOTE_CHUNK // m)  # patch offsets gathered at once (bounded memory)
    for k0 in range(0, level.patch * level.patch, step):
        q = level.vote_q[k0:k0 + step]  # [k, M]: the overlapping target rows per patch offset
        src = nnf.index_select(0, q.flatten()).view_as(q)
        sy = _reflect(src.div(w, rounding_mode="floor") + level.oy[k0:k0 + step, None], h)
        sx = _reflect(src.remainder(w) + level.ox[k0:k0 + step, None], w)
        wq = torch.where(level.vote_inside[k0:k0 + step], weight.index_select(0, q.flatten()).view_as(q),
                         torch.zeros(()))
        cols = flat_img.index_select(0, sy.mul_(w).add_(sx).flatten()).view(*q.shape, 3)
        for k in range(len(q)):  # summed offset by offset, in unfold order
            acc += wq[k][:, None] * cols[k]
            wsum += wq[k]
    fill = acc / wsum.clamp_min(1e-12)[:, None]
    stuck = wsum <= 1e-12  # all overlapping patches infinitely far: keep the current estimate
    fill[stuck] = flat_img[level.h_idx[stuck]]
    flat_img[level.h_idx] = fill


def _upsample_nnf(coarse: _Level, coarse_nnf: Tensor, fine: _Level, gen: torch.Generator) -> Tensor:
    """Fine NNF from the coarse one: source = 2 * coarse source + the target's parity offset."""
    w_c = coarse.w
    cy = (fine.ty // 2).clamp(max=coarse.h - 1)
    cx = (fine.tx // 2).clamp(max=coarse.w - 1)
    full = torch.arange(coarse.h * coarse.w)
    pos = torch.full((coarse.h * coarse.w,), -1, dtype=torch.long)
    pos[coarse.t_idx] = torch.arange(len(coarse.t_idx))
    cflat = cy * w_c + cx
    p = pos[cflat]
    src_c = torch.where(p >= 0, coarse_nnf[p.clamp_min(0)], full[cflat])
    sy = (2 * (src_c // w_c) + fine.ty % 2).clamp(0, fine.h - 1)
    sx = (2 * (src_c % w_c) + fine.tx % 2).clamp(0, fine.w - 1)
    nnf = sy * fine.w + sx
    bad = ~fine.valid.flatten()[nnf]
    if bad.any():
        pick = torch.randint(len(fine.v_idx), (int(bad.sum()),), generator=gen)
        nnf[bad] = fine.v_idx[pick]
    return nnf


def _coarse_init(img: Tensor, hole: Tensor) -> Tensor:
    """Smooth first guess for the coarsest hole (OpenCV Telea on known pixels only)."""
    import cv2

    u8 = img.round().clamp(0, 255).to(torch.uint8).numpy()
    filled = cv2.inpaint(u8, hole.numpy().astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
    out = img.clone()
    out[hole] = torch.from_numpy(filled).float()[hole]
    return out


def patchmatch_inpaint(
    image,
    mask,
    *,
    patch_size: int = 3,
    seed: int = 0,
    config: PatchMatchConfig | None = None,
    interrupt: Callable[[], None] | None = None,
    source=None,
):
    """Fill the masked region of ``image`` with texture copied from the rest of the image.

    Args:
        image: ``[H,W,3]`` RGB: numpy uint8, numpy float in [0,1], torch uint8 or torch float in [0,1].
            Grey ``[H,W]``/``[H,W,1]`` is expanded to RGB, an alpha channel is ignored.
        mask: ``[H,W]`` (bool, uint8 with 255 = fill, or float with > 0.5 = fill; an integer mask holding only 0 and
            1 is binary; :func:`cartoonseg.io.to_float_mask`). White = fill.
        patch_size: odd patch side (3 as in the original); overrides ``config.patch_size``.
        seed: seed of the random initialisation / search (the result is deterministic for a given seed).
        config: further :class:`PatchMatchConfig` parameters.
        interrupt: called before every EM iteration of every pyramid level (the unit of work, well under a
            second at 512 px); raise from it to cancel (e.g. ComfyUI's interrupt check). Nothing is returned then.
        source: optional ``[H,W]`` mask (same encodings as ``mask``, True = may be copied from): only patches
            lying fully inside it (and outside the hole) are copied; known pixels outside it still constrain the
            patches they overlap. Default: every known pixel. Used for depth-aware fills (copy only from the
            background side of a depth edge).

    Returns:
        The filled image, same type, dtype and layout ``[H,W,3]`` as the (RGB) input. Pixels outside the mask
        are returned unchanged.

    Raises:
        ValueError: mask size mismatch, or a mask (with ``source``) that leaves no complete known patch to copy
            from.
    """
    cfg = _with_patch_size(config, patch_size)
    img, kind = _image_to_float(image)
    hole = _mask_to_bool(mask, img.shape[:2])
    src = None if source is None else _mask_to_bool(source, img.shape[:2]) & ~hole
    if not hole.any():
        return _float_to_kind(img, kind, image, hole)
    blocked = hole if src is None else hole | ~src
    if bool((~grow_mask(blocked, cfg.patch_size // 2)).sum() == 0):
        raise ValueError(
            f"patchmatch_inpaint: the mask covers the image (leaves no complete {cfg.patch_size}x{cfg.patch_size} "
            "known patch to copy from); use a smaller mask" + ("" if src is None else " or a larger source region")
        )
    gen = torch.Generator().manual_seed(int(seed))

    # pyramid: stop before the short side gets too small or the known region vanishes
    imgs, holes, srcs = [img.clone()], [hole], [src]
    imgs[0][hole] = 0.0  # the colours under the hole are never read
    while min(holes[-1].shape) // 2 >= cfg.min_size and (cfg.max_levels == 0 or len(imgs) < cfg.max_levels):
        c_img, c_hole = _downsample(imgs[-1], holes[-1])
        c_src = None if src is None else _shrink_known(srcs[-1]) & ~c_hole
        c_blocked = c_hole if c_src is None else c_hole | ~c_src
        if bool((~grow_mask(c_blocked, cfg.patch_size // 2)).sum() < 4 * cfg.patch_size**2) or not bool(c_hole.any()):
            break
        imgs.append(c_img)
        holes.append(c_hole)
        srcs.append(c_src)

    n_levels = len(imgs)
    level: _Level | None = None
    nnf: Tensor | None = None
    for li in range(n_levels - 1, -1, -1):
        lvl_img = imgs[li]
        if level is None:
            lvl_img = _coarse_init(lvl_img, holes[li])
        else:
            up = F.interpolate(level.img.permute(2, 0, 1)[None], scale_factor=2, mode="nearest")[0].permute(1, 2, 0)
            up = up[: lvl_img.shape[0], : lvl_img.shape[1]]
            lvl_img = lvl_img.clone()
            lvl_img[holes[li]] = up[holes[li]]
        new = _Level(lvl_img, holes[li], cfg.patch_size, srcs[li])
        if level is None:
            nnf = new.v_idx[torch.randint(len(new.v_idx), (len(new.t_idx),), generator=gen)]
        else:
            nnf = _upsample_nnf(level, nnf, new, gen)
        level = new
        frac = li / (n_levels - 1) if n_levels > 1 else 0.0
        em_iters = round(cfg.em_iters_fine + (cfg.em_iters_coarse - cfg.em_iters_fine) * frac)
        for _ in range(max(1, em_iters)):
            if interrupt is not None:
                interrupt()
            level.refresh_target_feats()
            dist = level.dist(nnf)
            # the coarsest level searches the whole image; finer ones refine an upsampled field locally
            radius = float("inf") if li == n_levels - 1 else cfg.fine_search_radius
            _patchmatch_rounds(level, nnf, dist, cfg.pm_iters, cfg.search_ratio, gen, radius)
            _vote(level, nnf, dist)

    out = img.clone()
    out[hole] = level.img[hole]
    return _float_to_kind(out, kind, image, hole)


def telea_inpaint(image, mask, *, radius: int = 3):
    """OpenCV Telea (fast marching) inpainting: fast, smooth (large holes come out blurred).

    Args:
        image: as :func:`patchmatch_inpaint`.
        mask: as :func:`patchmatch_inpaint` (white = fill).
        radius: neighbourhood radius in pixels (>= 1).

    Returns:
        Same type and layout as the input; pixels outside the mask unchanged.
    """
    import cv2

    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    img, kind = _image_to_float(image)
    hole = _mask_to_bool(mask, img.shape[:2])
    if not hole.any():
        return _float_to_kind(img, kind, image, hole)
    if bool(hole.all()):
        raise ValueError("telea_inpaint: the mask covers the whole image; nothing to fill from")
    u8 = img.round().clamp(0, 255).to(torch.uint8).numpy()
    filled = cv2.inpaint(u8, hole.numpy().astype(np.uint8) * 255, int(radius), cv2.INPAINT_TELEA)
    out = img.clone()
    out[hole] = torch.from_numpy(filled).float()[hole]
    return _float_to_kind(out, kind, image, hole)


#: what a hole with nothing known around it is filled with (mid-grey, the neutral value diffusion inpainting also
#: puts into holes)
FLAT_FILL = 0.5


def fill_method(mask, *, method: str = "patchmatch", patch_size: int = 3, source=None) -> str:
    """What :func:`inpaint` runs for ``mask`` (``[H,W]`` in the encodings of :func:`patchmatch_inpaint`: bool, uint8
    with 255 = fill (1 = fill in a 0/1 mask), float with > 0.5 = fill): ``method`` itself, ``"telea"`` where
    PatchMatch finds no complete ``patch_size`` patch to copy from, or ``"flat"`` where the mask covers everything.

    Raises:
        ValueError: an unknown ``method``, or (PatchMatch) a ``patch_size`` that is not odd in [3, 15].
    """
    if method not in INPAINT_METHODS:
        raise ValueError(f"unknown inpaint method {method!r}; allowed: {', '.join(INPAINT_METHODS)}")
    if method == "patchmatch":
        _with_patch_size(None, patch_size)  # the one check of the patch size
    hole = _mask_to_bool(mask, None)  # read as inpaint reads it (a float 0.3 is no fill)
    if bool(hole.all()):
        return "flat"
    if method == "patchmatch" and hole.any():
        blocked = hole if source is None else hole | ~_mask_to_bool(source, tuple(hole.shape))
        if bool((~grow_mask(blocked, patch_size // 2)).sum() == 0):
            return "telea"
    return method


def inpaint(image, mask, *, method: str = "patchmatch", patch_size: int = 3, seed: int = 0, radius: int = 3,
            interrupt: Callable[[], None] | None = None, source=None):
    """Dispatch to :func:`patchmatch_inpaint` or :func:`telea_inpaint` (``method`` in :data:`INPAINT_METHODS`).

    ``interrupt`` (cancel check, raise to stop) is called between PatchMatch iterations, and once before Telea
    (a single OpenCV call that cannot be split). ``source`` restricts PatchMatch's copy sources (see
    :func:`patchmatch_inpaint`); Telea interpolates from the hole's border and ignores it.

    A mask that leaves nothing to copy from does not fail (the applications remove every character, and a
    character may fill the frame); it gets a documented result and a :class:`UserWarning`:

    * no complete ``patch_size`` patch outside the mask (and inside ``source``) for PatchMatch: Telea fills from the
      known pixels;
    * no known pixel at all (the mask covers the whole image): a flat mid-grey fill (:data:`FLAT_FILL`).
    """
    img, kind = _image_to_float(image)
    hole = _mask_to_bool(mask, img.shape[:2])
    used = fill_method(hole, method=method, patch_size=patch_size, source=source)
    if used == "flat":
        import warnings

        warnings.warn("inpaint: the mask covers the whole image, nothing is left to fill from; the result is a flat "
                      f"mid-grey fill ({FLAT_FILL}). Use a smaller mask for a real background.", stacklevel=2)
        out = img.clone()
        out[hole] = FLAT_FILL * 255.0
        return _float_to_kind(out, kind, image, hole)
    if used != method:
        import warnings

        warnings.warn(f"inpaint: the mask leaves no complete {patch_size}x{patch_size} patch to copy from"
                      f"{'' if source is None else ' in the source region'}; filled with Telea (smooth) instead "
                      "of PatchMatch", stacklevel=2)
        method = used
    if method == "patchmatch":
        return patchmatch_inpaint(image, mask, patch_size=patch_size, seed=seed, interrupt=interrupt, source=source)
    if method == "telea":
        if interrupt is not None:
            interrupt()
        return telea_inpaint(image, mask, radius=radius)
    raise ValueError(f"unknown inpaint method {method!r}; allowed: {', '.join(INPAINT_METHODS)}")
