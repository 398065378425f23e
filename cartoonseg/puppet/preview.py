"""Rig preview: each character's mesh (thin lines) and skeleton (bones, joints, pinned handles) over the image."""

from __future__ import annotations

import cv2
import numpy as np

from ..visualize import palette
from .rig import PuppetRig

__all__ = ["draw_rig"]


def draw_rig(image: np.ndarray, rig: PuppetRig, *, dim: float = 0.35) -> np.ndarray:
    """RGB uint8 ``[H,W,3]``: the image (darkened by ``dim``), each character's mesh edges in its colour, its bones
    in white with joints as dots, and its handle vertices as small rings."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(np.nan_to_num(img.astype(np.float32)), 0, 1) * 255 + 0.5).astype(np.uint8)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"image must be [H,W,3], got shape {img.shape}")
    out = (img[..., :3].astype(np.float32) * (1 - dim)).astype(np.uint8).copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 512))
    colours = palette(max(1, len(rig.characters)))
    for k, ch in enumerate(rig.characters):
        colour = tuple(int(c) for c in colours[k])
        pts = np.round(ch.mesh.vertices * 16).astype(np.int32)
        lines = [pts[e] for e in ch.mesh.edges()]
        cv2.polylines(out, lines, False, colour, 1, cv2.LINE_AA, shift=4)
        for v in ch.deformer.handles:
            cv2.circle(out, tuple(pts[v]), 4 * thick * 16, colour, thick, cv2.LINE_AA, shift=4)
        j = np.round(ch.skeleton.joints * 16).astype(np.int32)
        for a, c in ch.skeleton.bones:
            cv2.line(out, tuple(j[a]), tuple(j[c]), (255, 255, 255), 2 * thick, cv2.LINE_AA, shift=4)
        for p in j:
            cv2.circle(out, tuple(p), 3 * thick * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
            cv2.circle(out, tuple(p), 3 * thick * 16, colour, thick, cv2.LINE_AA, shift=4)
    return out
