"""Hole filling for the 3D Ken Burns renderer, in plain PyTorch.

* :func:`fill_holes_far`: disocclusion filling "from the farther side", as described for the 3D Ken Burns effect
  (Niklaus et al. 2019) and in CartoonSegmentation (arXiv 2312.01943, §6.1): every empty pixel looks for the nearest
  known pixel along 8 directions and takes the inverse-distance mean of the candidates that lie on the *far* side
  (depth within a tolerance of the farthest candidate), so a hole never copies its occluder. The per-direction
  search is a ``cummax`` scan over rows, columns and (through a skewed view) diagonals: O(H W) per direction and
  batched over frames, with no step limit.
* :func:`fill_push_pull`: smooth pull-push interpolation (a mean pyramid) for filling colour under the character
  masks when no background plate is given.
* :func:`fill_rows`: interpolation along rows, for the background's depth behind the characters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import grow_mask

__all__ = ["DIRECTIONS", "fill_holes_far", "fill_push_pull", "fill_rows", "hole_groups", "nearest_valid", "patchmatch_config"]

# fill_holes_far works on the holes' bounding box (grown by a pixel) when it is smaller than this share of the frame
CROP_FRACTION = 0.7
# (row step, column step) of the 8 search directions
DIRECTIONS: tuple[tuple[int, int], ...] = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, 1), (-1, -1), (1, 1), (1, -1))


def _scan_up(valid: Tensor) -> Tensor:
    """``valid`` ``[B,H,W]`` -> ``[B,H,W]`` row of the last valid pixel at or above each pixel in its column
    (-1 if none)."""
    rows = torch.arange(valid.shape[1], device=valid.device).view(1, -1, 1)
    return torch.where(valid, rows, -1).cummax(1).values


def _scan_up_right(valid: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest valid pixel along ``(-1, +1)`` (up and to the right) at or before each pixel.

    The anti-diagonals ``i + j = c`` become columns of a skewed copy (row ``i`` shifted right by ``i``).

    Returns:
        ``(row, col)`` ``[B,H,W]`` of the source pixel, row = -1 if none.
    """
    b, h, w = valid.shape
    padded = F.pad(valid, (0, h))  # [B,H,W+H]
    skewed = padded.reshape(b, h * (w + h))[:, : h * (w + h - 1)].reshape(b, h, w + h - 1)  # (i, c) = old (i, c-i)
    row = _scan_up(skewed)  # [B,H,W+H-1]
    cols = torch.arange(w, device=valid.device).view(1, 1, -1) + torch.arange(h, device=valid.device).view(1, -1, 1)
    r = torch.gather(row, 2, cols.expand(b, h, w))
    return r, torch.where(r >= 0, cols - r, -1)


def nearest_valid(valid: Tensor, direction: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Nearest valid pixel in one of :data:`DIRECTIONS`, for every pixel (a pixel that is itself valid finds
    itself).

    Args:
        valid: bool ``[B,H,W]``.
        direction: ``(dy, dx)`` with entries in {-1, 0, 1}, not both 0.

    Returns:
        ``(index, steps)``: ``[B,H,W]`` flat index ``row * W + col`` of the source pixel (-1 if none) and the number
        of steps to it.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    b, h, w = valid.shape
    dy, dx = direction
    transpose = dy == 0  # horizontal search = vertical search on the transposed image
    if transpose:
        valid_t = valid.transpose(1, 2)
        dy, dx = dx, 0
    else:
        valid_t = valid
    flip_h = dy > 0
    flip_w = dx < 0
    v = valid_t
    if flip_h:
        v = v.flip(1)
    if flip_w:
        v = v.flip(2)
    ht, wt = v.shape[1:]
    ii = torch.arange(ht, device=valid.device).view(1, -1, 1).expand(b, ht, wt)
    jj = torch.arange(wt, device=valid.device).view(1, 1, -1).expand(b, ht, wt)
    if dx == 0:
        r = _scan_up(v)
        c = torch.where(r >= 0, jj, -1)
    else:
        r, c = _scan_up_right(v)
    found = r >= 0
    steps = ii - r
    # undo the flips (the found coordinates and the per-pixel layout), then the transpose
    if flip_h:
        r = torch.where(found, ht - 1 - r, -1)
        r, c, steps, found = r.flip(1), c.flip(1), steps.flip(1), found.flip(1)
    if flip_w:
        c = torch.where(found, wt - 1 - c, -1)
        r, c, steps, found = r.flip(2), c.flip(2), steps.flip(2), found.flip(2)
    if transpose:
        r, c = c.transpose(1, 2), r.transpose(1, 2)
        steps, found = steps.transpose(1, 2), found.transpose(1, 2)
    index = torch.where(found, r * w + c, -1)
    return index, torch.where(found, steps, 0)


def fill_holes_far(
    values: Tensor,
    valid: Tensor,
    depth: Tensor,
    *,
    far_tolerance: float = 0.1,
    side: str = "farthest",
) -> tuple[Tensor, Tensor]:
    """Fill every invalid pixel from the farther side of the hole.

    For each hole pixel the nearest valid pixel along each of the 8 :data:`DIRECTIONS` is a candidate. With
    ``side="farthest"`` the candidates whose depth is within ``far_tolerance`` (relative) of the farthest candidate
    are averaged with weights ``1 / distance``. With ``side="behind"`` every candidate clearly behind the nearest
    one (the occluder that opened the hole) is used, with the same weights, so a hole in front of two background
    surfaces (a ground plane and a wall behind it) takes each from the side it is next to; candidates all at
    about one depth (no occluder among them) are all used.

    Args:
        values: ``[T,C,H,W]`` values (colour, alpha, ...).
        valid: ``[T,1,H,W]`` bool, the known pixels.
        depth: ``[T,1,H,W]`` depth of the known pixels (ignored elsewhere).
        far_tolerance: relative depth band counted as the far side (or as the occluder's side).
        side: ``farthest`` (the renderer's per-frame fill) or ``behind`` (see above).

    Returns:
        ``(values, depth)``, filled wherever any known pixel exists in the frame; unchanged where ``valid``.
    """
    if values.dim() != 4 or valid.shape != depth.shape or valid.shape[1] != 1 or valid.shape[0] != values.shape[0]:
        raise ValueError(
            f"fill_holes_far needs values [T,C,H,W], valid and depth [T,1,H,W]; got {tuple(values.shape)}, "
            f"{tuple(valid.shape)}, {tuple(depth.shape)}"
        )
    t, c, h, w = values.shape
    valid = valid.bool()
    holes = ~valid[:, 0]
    if not bool(holes.any()):
        return values, depth
    # Every search path runs through holes and ends on the first pixel that is not one, so it never leaves the
    # holes' bounding box grown by a pixel: filling that crop gives exactly the same result, and sparse holes (the
    # usual frame) no longer pay 8 scans of the whole frame.
    rows = torch.nonzero(holes.any(0).any(1)).squeeze(1)
    cols = torch.nonzero(holes.any(0).any(0)).squeeze(1)
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
    if (y1 - y0) * (x1 - x0) < CROP_FRACTION * h * w:
        win = (Ellipsis, slice(y0, y1), slice(x0, x1))
        sub_v, sub_z = fill_holes_far(values[win], valid[win], depth[win], far_tolerance=far_tolerance, side=side)
        out_v, out_z = values.clone(), depth.clone()
        out_v[win], out_z[win] = sub_v, sub_z
        return out_v, out_z
    hole_pos = holes.reshape(-1).nonzero().squeeze(1)  # flat over T*H*W
    frame = hole_pos // (h * w)
    flat_values = values.permute(0, 2, 3, 1).reshape(t * h * w, c)
    flat_depth = depth.reshape(-1)
    cand_z, cand_w, cand_v = [], [], []
    for direction in DIRECTIONS:
        index, steps = nearest_valid(valid[:, 0], direction)
        src = index.reshape(-1)[hole_pos]
        src_global = frame * (h * w) + src.clamp_min(0)
        # a known pixel reached only by grazing splats has no z-buffer depth: it cannot tell near from far
        found = (src >= 0) & torch.isfinite(flat_depth[src_global])
        dist = steps.reshape(-1)[hole_pos].to(values.dtype) * (math.sqrt(2.0) if all(direction) else 1.0)
        cand_z.append(torch.where(found, flat_depth[src_global], float("nan")))
        cand_w.append(torch.where(found, 1.0 / dist.clamp_min(1.0), 0.0))
        cand_v.append(flat_values[src_global])
    z = torch.stack(cand_z, 1)  # [M,8]
    wgt = torch.stack(cand_w, 1)
    vals = torch.stack(cand_v, 1)  # [M,8,C]
    z_far = torch.nan_to_num(z, nan=-float("inf")).amax(1, keepdim=True)
    if side == "farthest":
        far = (z >= z_far * (1.0 - far_tolerance)) & (wgt > 0)
    elif side == "behind":
        z_near = torch.nan_to_num(z, nan=float("inf")).amin(1, keepdim=True)
        spread = z_far > z_near * (1.0 + far_tolerance)
        far = torch.where(spread, z > z_near * (1.0 + far_tolerance), torch.ones_like(spread)) & (wgt > 0)
    else:
        raise ValueError(f"side must be 'farthest' or 'behind', got {side!r}")
    wgt = torch.where(far, wgt, 0.0)
    norm = wgt.sum(1, keepdim=True)
    ok = norm[:, 0] > 0
    fill_v = (wgt[..., None] * vals).sum(1) / norm.clamp_min(1e-12)
    fill_z = (wgt * torch.nan_to_num(z, nan=0.0)).sum(1, keepdim=True) / norm.clamp_min(1e-12)
    out_v = flat_values.clone()
    out_z = flat_depth.clone()
    target = hole_pos[ok]
    out_v[target] = fill_v[ok]
    out_z[target] = fill_z[ok, 0]
    return out_v.view(t, h, w, c).permute(0, 3, 1, 2), out_z.view(t, 1, h, w)


def fill_push_pull(values: Tensor, valid: Tensor) -> Tensor:
    """Smooth hole filling by a pull-push (mean) pyramid: holes take the bilinear interpolation of the
    coarsest level at which their neighbourhood has known pixels.

    Args:
        values: ``[B,C,H,W]``.
        valid: ``[B,1,H,W]`` bool or weights in [0,1].

    Returns:
        ``[B,C,H,W]`` with holes filled (unchanged where ``valid`` is 1; an all-invalid image stays unchanged).
    """
    if values.dim() != 4 or valid.dim() != 4 or valid.shape[1] != 1 or valid.shape[0] != values.shape[0]:
        raise ValueError(f"fill_push_pull needs [B,C,H,W] and [B,1,H,W], got {tuple(values.shape)}, {tuple(valid.shape)}")
    wgt = valid.to(values.dtype)
    if bool((wgt >= 1).all()) or not bool((wgt > 0).any()):
        return values
    levels: list[tuple[Tensor, Tensor]] = []
    cur_v, cur_w = values * wgt, wgt  # premultiplied
    while True:
        levels.append((cur_v, cur_w))
        h, w = cur_w.shape[-2:]
        if (h == 1 and w == 1) or bool((cur_w > 0).all()):
            break
        ph, pw = h % 2, w % 2
        if ph or pw:
            cur_v = F.pad(cur_v, (0, pw, 0, ph))
            cur_w = F.pad(cur_w, (0, pw, 0, ph))
        cur_v = F.avg_pool2d(cur_v, 2) * 4.0
        cur_w = F.avg_pool2d(cur_w, 2) * 4.0
        # keep weights bounded so the premultiplied values stay a plain mean
        scale = cur_w.clamp_min(1.0)
        cur_v, cur_w = cur_v / scale, cur_w / scale
    v, w_ = levels[-1]
    filled = v / w_.clamp_min(1e-8)
    for lv, lw in reversed(levels[:-1]):
        up = F.interpolate(filled, size=lv.shape[-2:], mode="bilinear", align_corners=False)
        a = lw.clamp(0.0, 1.0)
        filled = lv / lw.clamp_min(1e-8) * a + up * (1.0 - a)
        filled = torch.where(lw > 0, filled, up)
    a = wgt.clamp(0.0, 1.0)
    return values * a + filled * (1.0 - a)


def fill_rows(values: Tensor, valid: Tensor) -> Tensor:
    """Hole filling along rows: each hole pixel takes the linear interpolation of the nearest known pixels to its
    left and right (the one side there is, at an image border), rows with no known pixel keep
    :func:`fill_push_pull`'s value. Behind an upright occluder (a character standing on the ground) the surfaces of
    a scene continue sideways: a ground plane's nearness is constant along a row and a wall's everywhere, so the
    row interpolation keeps both, where a smooth 2-D fill would bend the ground up into the wall above the
    character's head.

    Args:
        values: ``[B,C,H,W]``.
        valid: ``[B,1,H,W]`` bool.

    Returns:
        ``[B,C,H,W]`` with holes filled (unchanged where ``valid``).
    """
    if values.dim() != 4 or valid.dim() != 4 or valid.shape[1] != 1 or valid.shape[0] != values.shape[0]:
        raise ValueError(f"fill_rows needs [B,C,H,W] and [B,1,H,W], got {tuple(values.shape)}, {tuple(valid.shape)}")
    known = valid[:, 0].bool()
    smooth = fill_push_pull(values, known[:, None])
    b, c, h, w = values.shape
    flat = values.reshape(b, c, h * w)
    sides = []
    for direction in ((0, -1), (0, 1)):
        index, steps = nearest_valid(known, direction)
        found = index >= 0
        gathered = torch.gather(flat, 2, index.clamp_min(0).reshape(b, 1, -1).expand(b, c, -1)).reshape(b, c, h, w)
        sides.append((gathered, steps.to(values.dtype)[:, None], found[:, None]))
    (left, dl, fl), (right, dr, fr) = sides
    both = fl & fr
    # weights: the nearer side counts more (linear interpolation between the two known pixels)
    mixed = (left * dr + right * dl) / (dl + dr).clamp_min(1.0)
    out = torch.where(both, mixed, torch.where(fl, left, torch.where(fr, right, smooth)))
    return torch.where(known[:, None], values, out)


def hole_groups(holes: Tensor, margin: int) -> list[tuple[Tensor, tuple[int, int, int, int]]]:
    """Holes grouped by proximity: connected components of the holes grown by ``margin``. Returns, per group, its
    hole pixels (bool ``[H,W]``) and its window ``(y0, y1, x0, x1)`` (the grown component's bounding box)."""
    import cv2

    grown = grow_mask(holes, margin).cpu().numpy().astype("uint8")
    count, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    labels_t = torch.from_numpy(labels).to(holes.device)
    groups = []
    for g in range(1, count):
        x0, y0, gw, gh = (int(v) for v in stats[g, :4])
        groups.append((holes & (labels_t == g), (y0, y0 + gh, x0, x0 + gw)))
    return groups


def patchmatch_config(patch_size: int):
    """PatchMatch settings for the renderer's fills: small windows still get a pyramid (the texture comes from the
    coarse levels) and enough EM iterations at full resolution to converge from the smooth coarse start."""
    from ..inpaint import PatchMatchConfig

    return PatchMatchConfig(patch_size=patch_size, min_size=max(12, 2 * patch_size), em_iters_fine=4)
