"""Extract RGBA characters from chroma-key videos or frame folders (arXiv 2312.01943, §3.1, Fig. 2).

    python -m train.chroma_key VIDEO_OR_DIR [VIDEO_OR_DIR ...] --out DIR [--fps 1] [--split-instances]

Each source is a video file (read with OpenCV) or a folder of frames; a folder holding videos is expanded to
them. Writes ``DIR/<source>_f<frame>_i<k>.png`` and one line per file in ``DIR/meta.jsonl`` (the
foreground-folder format read by ``train.synthesize``); ``<source>`` is the video's or folder's name without
suffix, with ``-<8 hex digits>`` added when two sources share it. ``DIR`` must be new, empty or written by
cartoonseg (e.g. ``train.make_fixtures``, an earlier run) unless ``--overwrite``, and must not be, lie inside or
contain a source. A rerun replaces its own files and ``meta.jsonl`` lines; the lines of other files are kept. See
:mod:`cartoonseg.data.chroma` for the algorithm.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from cartoonseg.data.chroma import VIDEO_EXTS, KeyConfig, extract_from_source
from cartoonseg.outputs import OutputFolder, add_overwrite_argument, check_outputs_apart, unique_names

from ._cli import check_option, parser, script_main


def _expand(sources: list[str]) -> list[Path]:
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.name in ("", ".."):  # "." or "..": named after the folder itself, not "" or ".."
            p = Path(os.path.abspath(p))
        if p.is_dir():
            videos = sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_EXTS)
            out.extend(videos if videos else [p])
        else:
            out.append(p)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m train.chroma_key``."""
    ap = parser("train.chroma_key", __doc__)
    ap.add_argument("sources", nargs="+", metavar="VIDEO_OR_DIR", help="video files or frame folders")
    ap.add_argument("--out", required=True, help="output foreground folder")
    ap.add_argument("--fps", type=float, default=1.0, help="frames examined per second of video, >= 0 (0: all)")
    ap.add_argument("--dedup", type=float, default=0.02,
                    help="near-duplicate threshold: mean abs. difference of keyed 32x32 thumbnails, >= 0 (0: keep "
                    "every frame)")
    ap.add_argument("--max-frames", type=int, default=None,
                    help="at most this many sampled frames per source, >= 1 (default: all)")
    ap.add_argument("--one-instance-per-frame", action="store_true",
                    help="do not split a frame's components into separate instances")
    ap.add_argument("--min-area", type=float, default=KeyConfig.min_area,
                    help="min instance area (frame fraction), in [0, --max-area)")
    ap.add_argument("--max-area", type=float, default=KeyConfig.max_area,
                    help="max instance area (frame fraction), in (--min-area, 1]")
    ap.add_argument("--max-border-touches", type=int, default=KeyConfig.max_border_touches,
                    help="reject instances touching more frame borders than this, 0..4")
    add_overwrite_argument(ap)
    return ap


def _run(args: argparse.Namespace) -> int:
    check_option("--fps", args.fps, 0)
    check_option("--dedup", args.dedup, 0)
    check_option("--max-frames", args.max_frames, 1)
    cfg = dataclasses.replace(KeyConfig(), split=not args.one_instance_per_frame, min_area=args.min_area,
                              max_area=args.max_area, max_border_touches=args.max_border_touches)
    sources = _expand(args.sources)
    missing = [str(s) for s in sources if not s.exists()]
    if missing:
        raise FileNotFoundError(f"chroma-key source(s) not found: {', '.join(missing)}")
    check_outputs_apart([args.out], [*args.sources, *sources])
    names = unique_names(sources)  # two sources called "shot" must not write the same files
    total = 0
    with OutputFolder(args.out, inputs=sources, overwrite=args.overwrite) as out:
        for src, name in zip(sources, names):
            records = extract_from_source(src, out, cfg, sample_fps=args.fps, dedup_threshold=args.dedup,
                                          max_frames=args.max_frames, name=name)
            print(f"{src}: {len(records)} instance(s)")
            total += len(records)
    print(f"wrote {total} foreground(s) to {args.out}")
    return 0


#: ``python -m train.chroma_key ...``: bad options and input are one "error:" line, status 2
main = script_main(build_parser, _run)


if __name__ == "__main__":
    raise SystemExit(main())
