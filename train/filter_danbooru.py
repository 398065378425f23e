"""Select foregrounds and backgrounds from Danbooru2021 metadata or a folder with tag files (paper §3.1).

    python -m train.filter_danbooru METADATA --images DIR --out DIR
    python -m train.filter_danbooru TAGGED_FOLDER --out DIR

A malformed metadata line stops the run with an error naming file and line; ``--skip-bad-lines`` skips such lines
instead, counts them (``bad_lines`` in the printed summary) and names the first on stderr at the end.

METADATA is a Danbooru JSON-lines file (or, with ``--images``, a folder of ``.json``/``.jsonl`` files); images are
looked up under ``--images`` as ``original/<id % 1000:04d>/<id>.<ext>``. A folder given without ``--images`` instead
holds images with ``<stem>.txt`` tag files.
Foregrounds (``solo`` + ``transparent_background``, real alpha, auto-cropped) go to ``OUT/fg/`` with tags in
``OUT/fg/meta.jsonl``; backgrounds (``scenery`` + ``no_humans``, size floor) go to ``OUT/bg/``. ``OUT/fg`` and
``OUT/bg`` may hold what cartoonseg wrote earlier (``train.make_fixtures``, ``train.chroma_key``, a previous run):
their ``meta.jsonl`` is merged, not truncated; other files there are refused unless ``--overwrite``, and an output
that is, lies inside or contains an input is always refused. See :mod:`cartoonseg.data.danbooru`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from cartoonseg.data.danbooru import DanbooruFilter, filter_posts, iter_folder_posts, iter_metadata_posts
from cartoonseg.outputs import add_overwrite_argument

from ._cli import check_option, parser, script_main


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m train.filter_danbooru``."""
    ap = parser("train.filter_danbooru", __doc__)
    ap.add_argument("metadata", metavar="METADATA",
                    help="Danbooru JSON-lines file (or folder of them, with --images), or an image folder with tag "
                    "files")
    ap.add_argument("--images", default=None,
                    help="Danbooru image root; needed with JSON-lines metadata (a folder METADATA given with it is "
                    "read as a folder of .json/.jsonl files)")
    ap.add_argument("--out", required=True, help="output root (gets fg/ and bg/)")
    ap.add_argument("--bg-min-short", type=int, default=DanbooruFilter.bg_min_short,
                    help="background short-side floor in px (default 640)")
    ap.add_argument("--bg-min-long", type=int, default=DanbooruFilter.bg_min_long,
                    help="background long-side floor in px (default 0; 1024 matches the paper's >1024x768)")
    ap.add_argument("--max-fg", type=int, default=None,
                    help="keep at most this many foregrounds (with --max-bg: reading stops once both are reached)")
    ap.add_argument("--max-bg", type=int, default=None,
                    help="keep at most this many backgrounds (with --max-fg: reading stops once both are reached)")
    ap.add_argument("--skip-bad-lines", action="store_true",
                    help="skip malformed metadata lines (not UTF-8, not a JSON post with an id, bad tags) instead of "
                         "stopping at the first; they are counted (bad_lines in the summary) and the first named on "
                         "stderr at the end")
    ap.add_argument("--verbose", action="store_true", help="print every rejection (and every skipped line)")
    add_overwrite_argument(ap)
    return ap


def _run(args: argparse.Namespace) -> int:
    for option, value in (("--bg-min-short", args.bg_min_short), ("--bg-min-long", args.bg_min_long),
                          ("--max-fg", args.max_fg), ("--max-bg", args.max_bg)):
        check_option(option, value, 0)
    meta = Path(args.metadata)
    if not meta.exists():
        raise ValueError(f"METADATA not found: {meta}")
    # a file, or a folder given with --images, is JSON-lines metadata; a folder alone is a tag folder (which may
    # hold a stray .json file)
    is_jsonl = meta.is_file() or bool(args.images)
    has_json = meta.is_dir() and any(p.suffix in (".json", ".jsonl") for p in meta.iterdir())
    if has_json and not args.images and not any(iter_folder_posts(meta)):
        raise ValueError(f"{meta} holds JSON-lines metadata and no tagged images: --images DIR (the Danbooru image "
                         f"root) is required")
    rules = dataclasses.replace(DanbooruFilter(), bg_min_short=args.bg_min_short, bg_min_long=args.bg_min_long,
                                max_fg=args.max_fg, max_bg=args.max_bg)
    bad: list[str] = []  # the malformed lines skipped (--skip-bad-lines)
    if is_jsonl:
        if not args.images:
            raise ValueError("--images DIR is required with JSON-lines metadata")
        if meta.is_dir() and not has_json:
            raise ValueError(f"{meta} holds no .json/.jsonl metadata files (to read a folder of images with tag "
                             f"files, leave --images out)")

        def skip(message: str) -> None:
            bad.append(message)
            if args.verbose:
                print(f"skip line: {message}")

        # image files looked up for selectable posts only
        posts = iter_metadata_posts(meta, args.images, rules=rules, on_bad_line=skip if args.skip_bad_lines else None)
        inputs = [meta, args.images]
    else:
        if args.skip_bad_lines:
            raise ValueError("--skip-bad-lines applies to JSON-lines metadata (a tag folder has no metadata lines)")
        posts = iter_folder_posts(meta)
        inputs = [meta]
    stats = filter_posts(posts, args.out, rules, verbose=args.verbose, inputs=inputs, overwrite=args.overwrite)
    if args.skip_bad_lines:
        stats["bad_lines"] = len(bad)
        if bad:
            print(f"warning: skipped {len(bad)} malformed metadata line(s); the first: {bad[0]}", file=sys.stderr)
    print(json.dumps(stats))
    return 0


#: ``python -m train.filter_danbooru ...``: bad options and input are one "error:" line, status 2
main = script_main(build_parser, _run)


if __name__ == "__main__":
    raise SystemExit(main())
