"""Previews: instances drawn over the image in distinct colours with their ids."""

from __future__ import annotations

import colorsys

import numpy as np

from .structures import Instances

__all__ = ["palette", "overlay"]


def palette(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours (uint8 ``[n,3]``), golden-ratio hue steps."""
    return np.array(
        [[int(c * 255) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 1.0)] for i in range(n)],
        dtype=np.uint8,
    ).reshape(n, 3)


def overlay(image: np.ndarray, instances: Instances, alpha: float = 0.5, draw_ids: bool = True) -> np.ndarray:
    """RGB uint8 ``[H,W,3]``: each instance's soft mask tinted in its colour (by id), box outline and id label."""
    out = image.astype(np.float32).copy()
    n = len(instances)
    if n == 0:
        return image.copy()
    ids = instances.ids.cpu().numpy()
    colours = palette(int(ids.max()) + 1).astype(np.float32)
    masks = instances.masks.cpu().numpy()
    order = np.argsort(instances.areas.cpu().numpy())[::-1]  # large first, small on top
    for i in order:
        a = (masks[i] * alpha)[:, :, None]
        out = out * (1 - a) + colours[ids[i]] * a
    out = out.clip(0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    for i in range(n):
        x1, y1, x2, y2 = (int(round(v)) for v in instances.boxes[i].tolist())
        x1, x2 = max(0, min(w - 1, x1)), max(0, min(w - 1, x2))
        y1, y2 = max(0, min(h - 1, y1)), max(0, min(h - 1, y2))
        c = colours[ids[i]].astype(np.uint8)
        out[y1, x1 : x2 + 1] = c
        out[y2, x1 : x2 + 1] = c
        out[y1 : y2 + 1, x1] = c
        out[y1 : y2 + 1, x2] = c
    if draw_ids:
        from PIL import Image, ImageDraw

        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        for i in range(n):
            x1, y1 = (max(0, int(v)) for v in instances.boxes[i, :2].tolist())
            label = str(int(ids[i]))
            draw.rectangle([x1, y1, x1 + 8 * len(label) + 4, y1 + 12], fill=tuple(int(v) for v in colours[ids[i]]))
            draw.text((x1 + 2, y1), label, fill=(0, 0, 0))
        out = np.array(pil)  # writable copy
    return out
