"""Drawn test figures shared by the occlusion, style and puppet-order tests."""

from __future__ import annotations

import numpy as np


def stick_figure(cx: int, sigma: float, *, kernel: int | None = None, h: int = 96, w: int = 128) -> np.ndarray:
    """A drawn stick figure's soft mask ``[h,w]`` float32 standing on the ground line y = 88 (body, head, arms, legs),
    its edges blurred by a Gaussian of ``sigma`` (a segmenter's soft mask of it) over a ``kernel``-px window (default
    ``2 ceil(3 sigma) + 1``)."""
    import cv2

    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (cx, 52), (10, 17), 0, 0, 360, 1, -1)
    cv2.circle(m, (cx, 26), 9, 1, -1)
    cv2.line(m, (cx - 8, 42), (cx - 26, 60), 1, 4)
    cv2.line(m, (cx + 8, 42), (cx + 26, 60), 1, 4)
    cv2.line(m, (cx - 5, 65), (cx - 8, 88), 1, 5)
    cv2.line(m, (cx + 5, 65), (cx + 8, 88), 1, 5)
    k = int(np.ceil(3 * sigma)) * 2 + 1 if kernel is None else kernel
    return cv2.GaussianBlur(m.astype(np.float32), (k, k), sigma)
