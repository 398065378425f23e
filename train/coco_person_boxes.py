"""Extract normalised person-box groups from a COCO ``instances_*.json`` (the layout file the original expects).

    python -m train.coco_person_boxes INSTANCES.json --out FILE [--min-persons 2]

Keeps images with at least ``--min-persons`` non-crowd person boxes; boxes are divided by max(W, H) and each
group is translated to min x/y = 0. Output: JSON list of ``{"image_id", "bboxes": [[x, y, w, h], ...]}``, read by
``train.synthesize --person-boxes FILE``. See :mod:`cartoonseg.data.coco_layouts`.
"""

from __future__ import annotations

import argparse

from cartoonseg import outputs
from cartoonseg.data.coco_layouts import extract_person_groups, write_person_groups

from ._cli import check_option, parser, script_main


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m train.coco_person_boxes``."""
    ap = parser("train.coco_person_boxes", __doc__)
    ap.add_argument("instances", metavar="INSTANCES.json", help="COCO instances annotation file")
    ap.add_argument("--out", required=True, help="output JSON file")
    ap.add_argument("--min-persons", type=int, default=2, help="minimum persons per image, >= 1")
    ap.add_argument("--min-box-frac", type=float, default=0.0,
                    help="ignore boxes whose longer side is under this fraction of max(W, H), in [0, 1]")
    outputs.add_overwrite_argument(ap)
    return ap


def _run(args: argparse.Namespace) -> int:
    if args.min_persons < 1:
        raise ValueError(f"--min-persons must be >= 1, got {args.min_persons}")
    check_option("--min-box-frac", args.min_box_frac, 0, 1)
    outputs.check_file(args.out, inputs=[args.instances], overwrite=args.overwrite)
    groups = extract_person_groups(args.instances, min_persons=args.min_persons, min_box_frac=args.min_box_frac)
    write_person_groups(groups, args.out, inputs=[args.instances], overwrite=args.overwrite)
    print(f"wrote {len(groups)} person-box group(s) to {args.out}")
    return 0


#: ``python -m train.coco_person_boxes ...``: bad options and input are one "error:" line, status 2
main = script_main(build_parser, _run)


if __name__ == "__main__":
    raise SystemExit(main())
