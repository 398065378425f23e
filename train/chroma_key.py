"""Extract RGBA characters from chroma-key videos or frame folders (arXiv 2312.01943, §3.1, Fig. 2).

    python -m train.chroma_key VIDEO_OR_DIR [VIDEO_OR_DIR ...] --out DIR [--fps 1] [--split-instances]

Each source is a video file (read with OpenCV) or a folder of frames; a folder holding videos is expanded to
them. Writes ``DIR/<source>_f<frame>_i<k>.png`` and appends one line per file to ``DIR/meta.jsonl`` (the
foreground-folder format read by ``train.synthesize``). See :mod:`cartoonseg.data.chroma` for the algorithm.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cartoonseg.data.chroma import VIDEO_EXTS, KeyConfig, extract_from_source


def _expand(sources: list[str]) -> list[Path]:
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            videos = sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_EXTS)
            out.extend(videos if videos else [p])
        else:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.chroma_key", description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", metavar="VIDEO_OR_DIR", help="video files or frame folders")
    ap.add_argument("--out", required=True, help="output foreground folder")
    ap.add_argument("--fps", type=float, default=1.0, help="frames examined per second of video (default 1; 0 = all)")
    ap.add_argument("--dedup", type=float, default=0.02,
                    help="near-duplicate threshold: mean abs. difference of keyed 32x32 thumbnails (default 0.02)")
    ap.add_argument("--max-frames", type=int, default=None, help="at most this many sampled frames per source")
    ap.add_argument("--one-instance-per-frame", action="store_true",
                    help="do not split a frame's components into separate instances")
    ap.add_argument("--min-area", type=float, default=KeyConfig.min_area, help="min instance area (frame fraction)")
    ap.add_argument("--max-area", type=float, default=KeyConfig.max_area, help="max instance area (frame fraction)")
    ap.add_argument("--max-border-touches", type=int, default=KeyConfig.max_border_touches,
                    help="reject instances touching more frame borders than this (default 2)")
    args = ap.parse_args(argv)
    try:
        cfg = dataclasses.replace(KeyConfig(), split=not args.one_instance_per_frame, min_area=args.min_area,
                                  max_area=args.max_area, max_border_touches=args.max_border_touches)
    except ValueError as err:
        ap.error(str(err))
    total = 0
    for src in _expand(args.sources):
        records = extract_from_source(src, args.out, cfg, sample_fps=args.fps, dedup_threshold=args.dedup,
                                      max_frames=args.max_frames)
        print(f"{src}: {len(records)} instance(s)")
        total += len(records)
    print(f"wrote {total} foreground(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
