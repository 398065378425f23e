"""The README's before/after picture of the Ken Burns disocclusion fill: far-side (before) vs the default
end-view PatchMatch fill (after), on a drawn scene with depth edges, next to the exactly ray-cast true view.

The scene is one of the procedural cartoon scenes of ``bench/bench_kenburns_quality.py`` (a patterned wall and
ground, houses/trees/fences as mid-ground cards, outlined characters). The renderer gets what the pipeline would:
image, depth, character masks and a PatchMatch plate of the characters' area. The picture shows the last frame of
the camera path; the pixels that the camera uncovers (not visible in the input) are outlined in the bottom row, a 3x detail of the area
with the most of them. By
default the scene's characters are left out: behind a character both fills show the same PatchMatch plate, so the
difference between the fills is at the background's own depth edges (houses, trees, fences against the wall).

    python bench/make_kenburns_fill_figure.py [--seed 1] [--camera pan-right] [--size 384] [--characters]
        [--out docs/images/kenburns_fill_before_after.jpg] [--overwrite]

The picture is written through :mod:`cartoonseg.outputs` (atomic, never over a file cartoonseg did not write):
refreshing the committed picture needs ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch
import torch.nn.functional as F
from bench_kenburns_quality import (
    SUPERSAMPLE,
    _down,
    make_scene,
    render_truth,
    scene_inputs,
    visible_in_input,
)

from cartoonseg import outputs
from cartoonseg.inpaint import background_mask, patchmatch_inpaint
from cartoonseg.kenburns import CameraPath, KenBurnsConfig, build_scene, render_kenburns, resolve_poses

ZOOM = 3


def _outline(img: torch.Tensor, mask: torch.Tensor, colour=(1.0, 0.1, 0.6)) -> torch.Tensor:
    """``img`` with the border of ``mask`` drawn in ``colour`` (one pixel wide)."""
    m = mask.float()[None, None]
    edge = (F.max_pool2d(m, 3, 1, 1) - m)[0, 0] > 0
    out = img.clone()
    out[edge] = torch.tensor(colour)
    return out


def _psnr(pred: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    mse = float(((pred - truth) ** 2)[mask].mean())
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="scene of bench_kenburns_quality.py")
    ap.add_argument("--camera", default="pan-right")
    ap.add_argument("--size", type=int, default=384, help="image width (height = 2/3 of it)")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--characters", action=argparse.BooleanOptionalAction, default=False,
                    help="keep the scene's characters (default: without them, so the picture shows the holes at the "
                         "background's own depth edges; behind characters both fills show the same plate)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "kenburns_fill_before_after.jpg"))
    outputs.add_overwrite_argument(ap)
    args = ap.parse_args(argv)
    from PIL import Image, ImageDraw

    outputs.check_file(args.out, overwrite=args.overwrite)

    size = (args.size * 2 // 3, args.size)
    h, w = size
    focal = max(h, w) / 2.0
    layers = make_scene(args.seed, w / h, focal)
    if not args.characters:
        layers = [layer for layer in layers if not layer.character]
    image, near, masks, scale = scene_inputs(layers, size)
    hole = background_mask(masks, dilate=5) > 0.5 if masks.shape[0] else None
    plate = patchmatch_inpaint(image, hole, patch_size=3) if hole is not None and bool(hole.any()) else None
    camera = CameraPath(preset=args.camera, frames=args.frames, playback=False)
    scene = build_scene(image, near, masks, plate)
    poses = resolve_poses(camera, scene.depth)
    pose = poses.poses[-1].clone().double()
    pose[0:3] *= scale
    truth, hits = render_truth(layers, pose, focal, size)
    disocc = _down((1 - visible_in_input(layers, hits, focal, size).float())[..., None], SUPERSAMPLE)[..., 0] >= 0.5
    frames = {}
    for fill in ("far-side", "patchmatch"):
        clip = render_kenburns(image, near, masks=masks, background=plate, camera=camera,
                               config=KenBurnsConfig(fill=fill))
        frames[fill] = clip.frames[-1]
    panels = [("input view", image),
              (f"far-side fill (before): {_psnr(frames['far-side'], truth, disocc):.1f} dB", frames["far-side"]),
              (f"patchmatch fill (default): {_psnr(frames['patchmatch'], truth, disocc):.1f} dB", frames["patchmatch"]),
              ("true view (ray cast)", truth)]
    # bottom row: the window (1/ZOOM of the frame) holding the most uncovered pixels, enlarged ZOOM times
    ch, cw = h // ZOOM, w // ZOOM
    counts = F.avg_pool2d(disocc.float()[None, None], (ch, cw), stride=1)[0, 0]
    y0, x0 = divmod(int(counts.argmax()), counts.shape[1])
    label_h = 18
    sheet = Image.new("RGB", (w * len(panels), 2 * (h + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(panels):
        crop = (_outline(img, disocc) if i else img)[y0 : y0 + ch, x0 : x0 + cw]
        crop = F.interpolate(crop.permute(2, 0, 1)[None], scale_factor=ZOOM, mode="nearest")[0].permute(1, 2, 0)
        for row, picture in enumerate((img, crop)):
            arr = (picture.clamp(0, 1) * 255 + 0.5).byte().numpy()
            sheet.paste(Image.fromarray(arr), (i * w, row * (h + label_h) + label_h))
        draw.text((i * w + 4, 3), label, fill=(0, 0, 0))
        draw.text((i * w + 4, h + label_h + 3), f"{ZOOM}x detail" + (", uncovered pixels outlined" if i else ""),
                  fill=(0, 0, 0))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with outputs.output_file(out, overwrite=args.overwrite) as tmp:
        sheet.save(tmp, format="JPEG", quality=80, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB); PSNR on the uncovered pixels of this frame: "
          f"far-side {_psnr(frames['far-side'], truth, disocc):.2f} dB, "
          f"patchmatch {_psnr(frames['patchmatch'], truth, disocc):.2f} dB ({int(disocc.sum())} pixels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
