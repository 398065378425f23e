"""Make the README's puppet animation preview (docs/images/puppet_synthetic.webp) and the workflow thumbnail
(workflows/puppet_animation.jpg) from a drawn test scene.

Everything is drawn here with Pillow, so the preview is reproducible without any model weights: a sky, hills and
a meadow, two outlined cartoon characters (head with eyes, body, arms, legs) whose soft masks are drawn alongside
(standing in for the segmenter's instance masks). The real pipeline then runs: automatic skeletons from the masks,
meshes and ARAP rigs, a PatchMatch background plate, and the presets "wave" (left character) and "bounce" (right)::

    python bench/make_puppet_preview.py [--width 320] [--frames 36] [--fps 12] [--overwrite]

The outputs follow the project's output policy: refreshing the committed pictures needs ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from cartoonseg import outputs  # noqa: E402
from cartoonseg.io import write_frames  # noqa: E402
from cartoonseg.puppet import PresetMotion, animate, background_plate, build_rig, draw_rig  # noqa: E402


def drawn_scene(w: int, h: int, supersample: int = 4):
    """(image uint8 [h,w,3], soft masks float32 [2,h,w]) of two cartoon characters in a landscape."""
    s = supersample
    W, H = w * s, h * s
    img = Image.new("RGB", (W, H), (150, 205, 245))
    d = ImageDraw.Draw(img)
    for i in range(5):
        x, y = (0.05 + 0.2 * i) * W, (0.06 + 0.05 * (i % 2)) * H
        d.ellipse((x, y, x + 0.13 * W, y + 0.07 * H), fill=(250, 250, 255))
    d.polygon([(0, 0.6 * H), (0.3 * W, 0.42 * H), (0.55 * W, 0.58 * H), (0.8 * W, 0.4 * H), (W, 0.55 * H), (W, H),
               (0, H)], fill=(110, 165, 120))
    d.rectangle((0, 0.68 * H, W, H), fill=(150, 200, 95))
    for i in range(14):
        x = (i * 0.073 + 0.02) * W
        d.line((x, 0.75 * H + (i % 3) * 0.05 * H, x + 0.02 * W, 0.73 * H + (i % 3) * 0.05 * H), fill=(120, 175, 80),
               width=2 * s)
    masks = []
    for cx, body, shirt in ((0.3, (250, 220, 190), (230, 90, 110)), (0.7, (245, 210, 180), (70, 130, 220))):
        cx *= W
        m = Image.new("L", (W, H), 0)
        dm = ImageDraw.Draw(m)
        line = (40, 40, 50)
        u = 0.012 * H  # unit
        parts = [
            ("line", (cx - 3 * u, 40 * u, cx - 15 * u, 56 * u), 4.5 * u, body),  # arms (under the shirt)
            ("line", (cx + 3 * u, 40 * u, cx + 15 * u, 56 * u), 4.5 * u, body),
            ("line", (cx - 4 * u, 60 * u, cx - 6 * u, 77 * u), 5.5 * u, (60, 60, 90)),  # legs
            ("line", (cx + 4 * u, 60 * u, cx + 6 * u, 77 * u), 5.5 * u, (60, 60, 90)),
            ("ellipse", (cx - 8 * u, 36 * u, cx + 8 * u, 64 * u), 0, shirt),  # body
            ("ellipse", (cx - 9 * u, 17 * u, cx + 9 * u, 37 * u), 0, body),  # head
        ]
        for kind, xy, width, colour in parts:
            if kind == "line":
                d.line(xy, fill=line, width=int(width + 2 * s))
                d.line(xy, fill=colour, width=int(width))
                dm.line(xy, fill=255, width=int(width + 2 * s))
                for (px, py) in (xy[:2], xy[2:]):
                    r = (width + 2 * s) / 2
                    dm.ellipse((px - r, py - r, px + r, py + r), fill=255)
                    d.ellipse((px - r, py - r, px + r, py + r), fill=line)
                    d.ellipse((px - width / 2, py - width / 2, px + width / 2, py + width / 2), fill=colour)
            else:
                d.ellipse(xy, fill=colour, outline=line, width=s)
                dm.ellipse(xy, fill=255)
        for ex in (-3.2, 3.2):  # eyes and mouth
            d.ellipse((cx + ex * u - 1.2 * u, 25 * u, cx + ex * u + 1.2 * u, 28.5 * u), fill=(30, 30, 40))
        d.arc((cx - 3 * u, 28 * u, cx + 3 * u, 33 * u), 20, 160, fill=(150, 50, 60), width=s)
        masks.append(m)
    img = img.resize((w, h), Image.LANCZOS)
    soft = [np.asarray(m.filter(ImageFilter.GaussianBlur(s / 2)).resize((w, h), Image.BOX), dtype=np.float32) / 255
            for m in masks]
    return np.asarray(img), np.stack(soft)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=320, help="width (height = 3/4)")
    ap.add_argument("--frames", type=int, default=36)
    ap.add_argument("--fps", type=float, default=12.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "puppet_synthetic.webp"))
    ap.add_argument("--thumbnail", default=str(ROOT / "workflows" / "puppet_animation.jpg"))
    outputs.add_overwrite_argument(ap)
    args = ap.parse_args(argv)
    outputs.check_distinct(args.out, args.thumbnail)
    for path in (args.out, args.thumbnail):  # before the work: refreshing the committed pictures needs --overwrite
        outputs.check_file(path, overwrite=args.overwrite)
    w, h = args.width, args.width * 3 // 4
    image, masks = drawn_scene(w, h)
    t0 = time.perf_counter()
    rig = build_rig(masks)
    t1 = time.perf_counter()
    plate = background_plate(image, rig)
    t2 = time.perf_counter()
    motion = {0: PresetMotion("wave"), 1: PresetMotion("bounce", period=1.0)}
    clip = animate(image, rig, motion, frames=args.frames, fps=args.fps, plate=plate)
    t3 = time.perf_counter()
    outputs.write(args.out, lambda tmp: write_frames(clip.frames, tmp, args.fps, quality=80), overwrite=args.overwrite)
    mid = (clip.frames[args.frames // 4].numpy() * 255 + 0.5).astype(np.uint8)
    thumb = np.concatenate([draw_rig(image, rig, dim=0.25), mid], axis=1)
    Path(args.thumbnail).parent.mkdir(parents=True, exist_ok=True)
    with outputs.output_file(args.thumbnail, overwrite=args.overwrite) as tmp:
        Image.fromarray(thumb).save(tmp, format="JPEG", quality=85)
    print(f"{args.out}: {len(clip.frames)} frames {w}x{h}, {Path(args.out).stat().st_size // 1024} KiB; rig "
          f"{t1 - t0:.2f}s, plate {t2 - t1:.1f}s, render {t3 - t2:.1f}s; thumbnail {args.thumbnail}")
    for c in rig.describe():
        print(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
