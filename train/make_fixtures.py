"""Write procedural fixture data (cartoon-like RGBA characters and scenic backgrounds) for tests and small runs.

    python -m train.make_fixtures --out DIR --num-fg N --num-bg M --seed S

Writes ``DIR/fg/*.png`` (RGBA) with ``DIR/fg/meta.jsonl`` (tags) and ``DIR/bg/*.jpg``; see
:mod:`cartoonseg.data.fixtures`. Deterministic given the seed. ``DIR/fg`` and ``DIR/bg`` must be new, empty or
written by cartoonseg (a rerun replaces its own files, other tools' outputs and their ``meta.jsonl`` lines are
kept) unless ``--overwrite``.
"""

from __future__ import annotations

import argparse

from cartoonseg._cli import run_parser
from cartoonseg._cli import seed as cli_seed
from cartoonseg.data.fixtures import make_fixtures
from cartoonseg.outputs import add_overwrite_argument


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.make_fixtures", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (gets fg/ and bg/)")
    ap.add_argument("--num-fg", type=int, default=40, help="number of foreground characters (default 40)")
    ap.add_argument("--num-bg", type=int, default=10, help="number of backgrounds (default 10)")
    ap.add_argument("--seed", type=cli_seed, default=0, help="random seed (default 0)")
    ap.add_argument("--fg-height", type=int, nargs=2, default=(220, 480), metavar=("MIN", "MAX"),
                    help="character height range in px (default 220 480)")
    ap.add_argument("--bg-size", type=int, nargs=2, default=(960, 720), metavar=("W", "H"),
                    help="background size (default 960 720)")
    add_overwrite_argument(ap)
    ap.set_defaults(func=lambda args: _run(ap, args))
    return run_parser(ap, argv)  # refused or unwritable outputs: one "error:" line, status 2


def _run(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.num_fg < 0 or args.num_bg < 0:
        ap.error("--num-fg and --num-bg must be >= 0")
    paths = make_fixtures(args.out, args.num_fg, args.num_bg, seed=args.seed, fg_height=tuple(args.fg_height),
                          bg_size=tuple(args.bg_size), overwrite=args.overwrite)
    print(f"wrote {len(paths['fg'])} foregrounds and {len(paths['bg'])} backgrounds to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
