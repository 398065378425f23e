"""Make the README's animated preview (docs/images/kenburns_synthetic.webp) from a synthetic cartoon scene.

A sky, hills and a ground plane (depth growing towards the bottom) with two "characters" (outlined ellipses) as
instances in front, a background plate painted without them, the automatic camera path with ping-pong playback.
Everything is drawn here, so the preview is reproducible without any model weights::

    python bench/make_kenburns_preview.py [--size 320] [--frames 40] [--out docs/images/kenburns_synthetic.webp] \
        [--overwrite]

The output follows the project's output policy: refreshing the committed picture needs ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from cartoonseg import outputs  # noqa: E402
from cartoonseg.io import write_frames  # noqa: E402
from cartoonseg.kenburns import CameraPath, render_kenburns  # noqa: E402


def synthetic_scene(w: int, h: int):
    plate = Image.new("RGB", (w, h), (150, 200, 245))
    draw = ImageDraw.Draw(plate)
    for i in range(6):  # clouds
        x, y = (i * 0.19 + 0.05) * w, (0.08 + 0.07 * (i % 2)) * h
        draw.ellipse((x, y, x + 0.14 * w, y + 0.06 * h), fill=(250, 250, 255))
    draw.polygon([(0, 0.62 * h), (0.25 * w, 0.38 * h), (0.5 * w, 0.6 * h), (0.78 * w, 0.34 * h), (w, 0.58 * h), (w, h),
                  (0, h)], fill=(95, 150, 110))
    draw.rectangle((0, 0.62 * h, w, h), fill=(140, 190, 90))
    for i in range(9):  # stripes on the ground make the parallax visible
        y = 0.62 * h + (0.38 * h) * (i / 9) ** 1.6
        draw.line((0, y, w, y), fill=(120, 170, 80), width=2)
    image = plate.copy()
    masks = []
    for (cx, cy, rx, ry), colour in (((0.33, 0.62, 0.11, 0.24), (235, 120, 160)), ((0.66, 0.70, 0.09, 0.2), (250, 190, 80))):
        box = ((cx - rx) * w, (cy - ry) * h, (cx + rx) * w, (cy + ry) * h)
        ImageDraw.Draw(image).ellipse(box, fill=colour, outline=(30, 30, 30), width=3)
        eye = (cx * w - 0.03 * w, (cy - 0.1) * h)
        ImageDraw.Draw(image).ellipse((eye[0], eye[1], eye[0] + 0.02 * w, eye[1] + 0.03 * h), fill=(30, 30, 30))
        m = Image.new("L", (w, h), 0)
        ImageDraw.Draw(m).ellipse(box, fill=255)
        masks.append(np.asarray(m, dtype=np.float32) / 255.0)
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None].repeat(w, 1)
    nearness = np.where(rows < 0.62, 0.08, 0.08 + 0.55 * (rows - 0.62) / 0.38)  # sky/hills far, ground approaching
    for m, value in zip(masks, (0.75, 0.9)):
        nearness = np.where(m > 0.5, value, nearness)
    as_t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    return (as_t(np.asarray(image)) / 255.0, as_t(nearness), as_t(np.stack(masks)), as_t(np.asarray(plate)) / 255.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=320, help="width (height = 3/4)")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "images" / "kenburns_synthetic.webp"))
    outputs.add_overwrite_argument(ap)
    args = ap.parse_args(argv)
    outputs.check_file(args.out, overwrite=args.overwrite)  # before the rendering
    image, nearness, masks, plate = synthetic_scene(args.size, args.size * 3 // 4)
    clip = render_kenburns(image, nearness, masks=masks, background=plate,
                           camera=CameraPath(preset="auto", frames=args.frames, zoom=1.35, easing="ease-in-out"))
    outputs.write(args.out, lambda tmp: write_frames(clip.frames, tmp, clip.fps, quality=80), overwrite=args.overwrite)
    print(f"{args.out}: {len(clip.frames)} frames, {Path(args.out).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
