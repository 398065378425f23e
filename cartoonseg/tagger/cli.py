"""``tag`` command: booru tags of images as JSON, for the whole image or per segmented instance.

Usage (through the package CLI): ``python -m cartoonseg tag IMAGE... --tagger DIR [--detector P --refiner P]``.
:func:`add_parsers` registers the sub-command on the package's argparse sub-parsers and :func:`run_tag` runs it;
:func:`main` runs it stand-alone (``python -m cartoonseg.tagger IMAGE... --tagger DIR``), with the error policy
of :mod:`cartoonseg._cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .._cli import TAG_LIST_HELP, SkippedInputs, finish_parser, progress, quiet, run_parser
from ..io import read_image
from ..structures import EXTRA_CHARACTER_TAGS, EXTRA_RATING, EXTRA_TAGS
from ..tags import DEFAULT_CHARACTER_THRESHOLD, DEFAULT_EXCLUDE, DEFAULT_GENERAL_THRESHOLD, join_tag_list

__all__ = ["add_parsers", "add_tag_parser", "build_parser", "run_tag", "main"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--tagger", required=True, help="tagger folder (HF layout) or Hugging Face repo id")
    parser.add_argument("--detector", default=None,
                        help="detector weights path or released name ('detector'): tag each instance, not the image")
    parser.add_argument("--refiner", default=None,
                        help="refiner weights path or released name ('refiner'); 'none' or omitted: coarse masks")
    parser.add_argument("--general-threshold", type=float, default=DEFAULT_GENERAL_THRESHOLD,
                        help="minimum confidence of a general tag")
    parser.add_argument("--character-threshold", type=float, default=DEFAULT_CHARACTER_THRESHOLD,
                        help="minimum confidence of a character-name tag")
    parser.add_argument("--general-mcut", action="store_true", help="MCut threshold for general tags")
    parser.add_argument("--character-mcut", action="store_true", help="MCut threshold for character tags")
    parser.add_argument("--exclude", default=None, metavar="TAGS",
                        help=f"tags never reported ({TAG_LIST_HELP}), matched in any case with spaces and "
                             f"underscores alike (default: none for a whole image; with --detector the white fill's "
                             f"'{join_tag_list(DEFAULT_EXCLUDE)}'; '' = none)")
    parser.add_argument("--score-thr", type=float, default=0.3, help="detector score threshold")
    parser.add_argument("--max-instances", type=int, default=100, help="at most this many instances per image")
    parser.add_argument("--device", default="cpu",
                        help="torch device: cpu, cuda, cuda:N, mps, or auto (CUDA when present)")
    parser.add_argument("--no-download", action="store_true", help="never download missing tagger/detector files")
    parser.add_argument("--indent", type=int, default=2, help="JSON indent (0 = one line)")


def add_tag_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``tag`` on an ``argparse`` sub-parsers object; the parser's ``func`` default is :func:`run_tag`."""
    parser = subparsers.add_parser("tag", help="booru tags (WD SwinV2 v3) of images or of their instances as JSON")
    _add_arguments(parser)
    parser.set_defaults(func=run_tag)
    return parser


def add_parsers(subparsers) -> None:
    """Register this module's sub-commands (``tag``) on the package CLI, like the other ``add_parsers``."""
    add_tag_parser(subparsers)


def build_parser() -> argparse.ArgumentParser:
    """The stand-alone parser of ``python -m cartoonseg.tagger IMAGE... --tagger DIR`` (no sub-command name)."""
    parser = argparse.ArgumentParser(prog="python -m cartoonseg.tagger", description=__doc__.splitlines()[0])
    _add_arguments(parser)
    parser.set_defaults(func=run_tag)
    return finish_parser(parser)


def _json_text(document, indent: int | None) -> str:
    """The JSON text, built whole before anything is printed: non-ASCII tag names and paths stay readable where
    stdout can encode them, and are ``\\u`` escapes (the same JSON) where it cannot (``LC_ALL=C``,
    ``PYTHONIOENCODING=ascii``), instead of half a document followed by an encoding error."""
    text = json.dumps(document, indent=indent, ensure_ascii=False)
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8", getattr(sys.stdout, "errors", None) or "strict")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(document, indent=indent, ensure_ascii=True)
    return text


def run_tag(args: argparse.Namespace) -> int:
    """Tag ``args.images`` and print one JSON document (a list with one entry per image) to stdout."""
    from .tagging import _check_threshold, load_tagger, tag_instances

    # before the tagger loads (a repo id may download ~400 MB): a bad threshold used to fail only at the first image
    _check_threshold("--general-threshold", args.general_threshold)
    _check_threshold("--character-threshold", args.character_threshold)
    skipped = SkippedInputs(len(args.images))
    skipped.check(args.images, read_image)  # unreadable inputs skipped (none usable: the error) before any load
    tagger = load_tagger(args.tagger, device=args.device, allow_download=not args.no_download)
    options = dict(
        general_threshold=args.general_threshold,
        character_threshold=args.character_threshold,
        general_mcut=args.general_mcut,
        character_mcut=args.character_mcut,
    )
    if args.exclude is not None:
        options["exclude"] = args.exclude
    segmenter = None
    if args.detector:
        from .._cli import load_networks
        from ..segmenter import Segmenter

        detector, refiner = load_networks(args.detector, args.refiner, allow_download=not args.no_download,
                                          device=args.device)
        segmenter = Segmenter(detector, refiner=refiner, score_thr=args.score_thr, max_instances=args.max_instances)
    out = []
    bar = progress(len(args.images), "images", quiet(args), unit="image")
    for path in args.images:
        bar.update(1)
        rgb = skipped.read(path, read_image)
        if rgb is None:
            continue
        if segmenter is None:
            out.append({"image": path, **tagger.tag(rgb, **options).to_dict()})
            continue
        instances, background = tag_instances(tagger, rgb, segmenter(rgb), **options)
        entries = []
        for i in range(len(instances)):
            entries.append(
                {
                    "index": i,
                    "id": int(instances.ids[i]),
                    "box": [round(float(v), 2) for v in instances.boxes[i].tolist()],
                    "score": round(float(instances.scores[i]), 4),
                    "tags": instances.extras[EXTRA_TAGS][i],
                    "character": instances.extras[EXTRA_CHARACTER_TAGS][i],
                    "rating": instances.extras[EXTRA_RATING][i],
                }
            )
        out.append({"image": path, "instances": entries, "background": background.to_dict()})
    bar.close()
    sys.stdout.write(_json_text(out, args.indent or None) + "\n")
    skipped.finish()  # the JSON of the readable images is out; the exit status tells the rest
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run stand-alone; failures print one ``error:`` line and return 2 (the policy of :mod:`cartoonseg._cli`)."""
    return run_parser(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
