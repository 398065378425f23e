"""Previews: instances drawn over the image in distinct colours with their ids."""

from __future__ import annotations

import colorsys

import numpy as np

from .structures import Instances

__all__ = ["palette", "id_colours", "overlay"]


def id_colours(ids) -> np.ndarray:
    """The colour of each id (uint8 ``[len(ids),3]``): golden-ratio hue steps, ``palette(n)[i]`` for id ``i``. Any
    integer id has one (negative ones and the large ids of long tracked videos too)."""
    return np.array(
        [[int(c * 255) for c in colorsys.hsv_to_rgb((int(i) * 0.618034) % 1.0, 0.75, 1.0)] for i in ids],
        dtype=np.uint8,
    ).reshape(-1, 3)


def palette(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours (uint8 ``[n,3]``), golden-ratio hue steps."""
    return id_colours(range(n))


def overlay(image: np.ndarray, instances: Instances, alpha: float = 0.5, draw_ids: bool = True) -> np.ndarray:
    """RGB uint8 ``[H,W,3]``: each instance's soft mask tinted in its colour (by id), box outline and id label."""
    out = image.astype(np.float32).copy()
    n = len(instances)
    if n == 0:
        return image.copy()
    ids = instances.ids.cpu().numpy()
    # colours of the ids present only: ids are any integers (tracked videos count up into the millions)
    unique, slot = np.unique(ids, return_inverse=True)
    colours = id_colours(unique).astype(np.float32)[slot.reshape(-1)]  # one row per instance
    masks = instances.masks.cpu().numpy()
    order = np.argsort(instances.areas.cpu().numpy())[::-1]  # large first, small on top
    for i in order:
        a = (masks[i] * alpha)[:, :, None]
        out = out * (1 - a) + colours[i] * a
    out = out.clip(0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    for i in range(n):
        x1, y1, x2, y2 = (int(round(v)) for v in instances.boxes[i].tolist())
        x1, x2 = max(0, min(w - 1, x1)), max(0, min(w - 1, x2))
        y1, y2 = max(0, min(h - 1, y1)), max(0, min(h - 1, y2))
        c = colours[i].astype(np.uint8)
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
            draw.rectangle([x1, y1, x1 + 8 * len(label) + 4, y1 + 12], fill=tuple(int(v) for v in colours[i]))
            draw.text((x1 + 2, y1), label, fill=(0, 0, 0))
        out = np.array(pil)  # writable copy
    return out
