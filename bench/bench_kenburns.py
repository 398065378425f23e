"""Speed of the 3D Ken Burns renderer (cartoonseg.kenburns) on a synthetic layered scene.

The scene: a random-texture background whose nearness grows towards the bottom (a ground plane), two character
cards (soft-free rectangles) in front, and a background plate. Reported: scene build, automatic-path search and
per-frame rendering (median over the frames), and the total for a full clip (the original's 75 frames; the 73
ping-pong frames are copies and cost nothing). The issue's goal is <= 60 s for 75 frames at 1024 px on the
project's 2-core CPU.

With ``--fill patchmatch`` (or ``patchmatch+plate``: the plate shown behind the characters) the end-view
disocclusion inpainting of that fill runs before the frames, and its time is reported as ``inpaint_s``.

Usage::

    python bench/bench_kenburns.py --size 1024 --frames 75 [--threads 2] [--device cpu|cuda] [--dof]
        [--fill far-side|patchmatch|patchmatch+plate] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _json_out import JSON_HELP, add_overwrite_argument, check_json, write_json  # noqa: E402  (bench/: --json FILE)

import torch  # noqa: E402

from cartoonseg.kenburns import (  # noqa: E402
    CameraPath,
    build_scene,
    inpaint_scene,
    render_poses,
    resolve_poses,
)
from cartoonseg.kenburns.dof import bokeh_blur, focus_schedule  # noqa: E402
from cartoonseg.kenburns.render import coverage_counter  # noqa: E402

from bench_kenburns_quality import fill_config  # noqa: E402  (the benchmarks' fill names: "<fill>[+plate][+noplanes]")


def make_scene(size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(size, size, 3, generator=g)
    rows = torch.linspace(0.0, 1.0, size)[:, None].expand(size, size)
    nearness = 0.1 + 0.4 * rows
    masks = torch.zeros(2, size, size)
    masks[0, size // 4 : 3 * size // 4, size // 5 : size // 2] = 1.0
    masks[1, size // 3 : size, size // 2 : 4 * size // 5] = 1.0
    nearness = torch.where(masks[0] > 0, torch.tensor(0.8), nearness)
    nearness = torch.where(masks[1] > 0, torch.tensor(1.0), nearness)
    plate = torch.rand(size, size, 3, generator=g)
    return image, nearness, masks, plate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=75)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=0, help="frames per batch (0 = auto)")
    ap.add_argument("--dof", action="store_true", help="include depth of field")
    ap.add_argument("--fill", default="far-side",
                    choices=["far-side", "patchmatch", "patchmatch+plate", "patchmatch+noplanes",
                             "patchmatch+plate+noplanes"],
                    help="time the end-view inpainting of this fill too (far-side: none)")
    ap.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(ap)
    args = ap.parse_args(argv)
    check_json(args)  # a file that may not be written fails now, not after the run
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    image, nearness, masks, plate = make_scene(args.size)
    config = dataclasses.replace(fill_config(args.fill), frame_batch=args.batch, depth_of_field=args.dof)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    with torch.no_grad():
        t0 = time.perf_counter()
        scene = build_scene(image, nearness, masks, plate, config=config, device=device)
        sync()
        t1 = time.perf_counter()
        poses = resolve_poses(CameraPath(preset="auto", frames=args.frames, playback=True), scene.depth,
                              coverage_fn=coverage_counter(scene))
        sync()
        t2 = time.perf_counter()
        report = inpaint_scene(scene, poses, config=config)
        sync()
        t_inpaint = time.perf_counter()
        batch = args.batch or 1
        focus = focus_schedule(poses.times, scene.focus_nearness, config.dof_speed)
        per_frame = []
        for start in range(0, args.frames, batch):
            stop = min(args.frames, start + batch)
            f0 = time.perf_counter()
            rgb, _, disparity = render_poses(scene, poses.poses[start:stop].to(device), poses.focal, config=config)
            if args.dof:
                near = ((disparity - 1 / scene.z_far) / (1 / scene.z_near - 1 / scene.z_far)).clamp(0, 1)
                rgb = bokeh_blur(rgb, near, focus[start:stop].to(device), strength=config.dof_strength)
            rgb.permute(0, 2, 3, 1).cpu()
            sync()
            per_frame.append((time.perf_counter() - f0) / (stop - start))
        t3 = time.perf_counter()
    result = {
        "size": args.size, "frames": args.frames, "device": str(device), "threads": torch.get_num_threads(),
        "dof": args.dof, "points": [len(layer) for layer in scene.layers],
        "fill": args.fill, "inpaint_s": round(t_inpaint - t2, 2),
        "key_view_pixels": report.hole_pixels if report is not None else None,
        "scene_s": round(t1 - t0, 3), "auto_path_s": round(t2 - t1, 3),
        "frame_ms_median": round(1000 * statistics.median(per_frame), 1),
        "frame_ms_min": round(1000 * min(per_frame), 1),
        "render_s": round(t3 - t_inpaint, 2), "total_s": round(t3 - t0, 2),  # the total includes the inpainting
        "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    write_json(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
