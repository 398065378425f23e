"""Write procedural fixture data (cartoon-like RGBA characters and scenic backgrounds) for tests and small runs.

    python -m train.make_fixtures --out DIR --num-fg N --num-bg M --seed S

Writes ``DIR/fg/*.png`` (RGBA) with ``DIR/fg/meta.jsonl`` (tags) and ``DIR/bg/*.jpg``; see
:mod:`cartoonseg.data.fixtures`. Deterministic given the seed. ``DIR/fg`` and ``DIR/bg`` must be new, empty or
written by cartoonseg (a rerun replaces its own files, other tools' outputs and their ``meta.jsonl`` lines are
kept) unless ``--overwrite``.
"""

from __future__ import annotations

import argparse

from cartoonseg._cli import seed as cli_seed
from cartoonseg.data.fixtures import (MAX_BACKGROUND_SIZE, MAX_CHARACTER_HEIGHT, MIN_BACKGROUND_SIZE,
                                      MIN_CHARACTER_HEIGHT, make_fixtures)
from cartoonseg.outputs import add_overwrite_argument

from ._cli import parser, script_main


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m train.make_fixtures``."""
    ap = parser("train.make_fixtures", __doc__)
    ap.add_argument("--out", required=True, help="output folder (gets fg/ and bg/)")
    ap.add_argument("--num-fg", type=int, default=40, help="number of foreground characters")
    ap.add_argument("--num-bg", type=int, default=10, help="number of backgrounds")
    ap.add_argument("--seed", type=cli_seed, default=0, help="random seed")
    ap.add_argument("--fg-height", type=int, nargs=2, default=(220, 480), metavar=("MIN", "MAX"),
                    help=f"character height range in px, {MIN_CHARACTER_HEIGHT} <= MIN <= MAX <= "
                    f"{MAX_CHARACTER_HEIGHT}")
    ap.add_argument("--bg-size", type=int, nargs=2, default=(960, 720), metavar=("W", "H"),
                    help=f"background size in px, each in [{MIN_BACKGROUND_SIZE}, {MAX_BACKGROUND_SIZE}]")
    add_overwrite_argument(ap)
    return ap


def _run(args: argparse.Namespace) -> int:
    if args.num_fg < 0 or args.num_bg < 0:
        raise ValueError(f"--num-fg and --num-bg must be >= 0, got {args.num_fg} and {args.num_bg}")
    low, high = args.fg_height
    if not MIN_CHARACTER_HEIGHT <= low <= high <= MAX_CHARACTER_HEIGHT:
        raise ValueError(f"--fg-height MIN MAX must satisfy {MIN_CHARACTER_HEIGHT} <= MIN <= MAX <= "
                         f"{MAX_CHARACTER_HEIGHT}, got {low} {high}")
    if not all(MIN_BACKGROUND_SIZE <= v <= MAX_BACKGROUND_SIZE for v in args.bg_size):
        raise ValueError(f"--bg-size W H must each be in [{MIN_BACKGROUND_SIZE}, {MAX_BACKGROUND_SIZE}], got "
                         f"{args.bg_size[0]} {args.bg_size[1]}")
    paths = make_fixtures(args.out, args.num_fg, args.num_bg, seed=args.seed, fg_height=tuple(args.fg_height),
                          bg_size=tuple(args.bg_size), overwrite=args.overwrite)
    print(f"wrote {len(paths['fg'])} foregrounds and {len(paths['bg'])} backgrounds to {args.out}")
    return 0


#: ``python -m train.make_fixtures ...``: bad options and input are one "error:" line, status 2
main = script_main(build_parser, _run)


if __name__ == "__main__":
    raise SystemExit(main())
