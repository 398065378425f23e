"""Stage 2: train the IS-Net refiner (GT encoder first, then L_ppa + L_IS; arXiv 2312.01943 §4.2-4.3).

    python -m train.train_refiner --data DIR --out DIR [--preset isnet|tiny] [--epochs E] [--gt-epochs G]
    torchrun --nproc-per-node N -m train.train_refiner --data DIR --out DIR ...

``--data`` is a COCO JSON (ideally with ``pred_segmentations`` from ``python -m train.dump_predictions``) or a
dataset folder. Defaults: 720 crops, AdamW lr 1e-3 wd 5e-3, 60 epochs, coarse masks from stage-1 predictions /
25 % box rectangles / 50 % dilate-erode, loss 5 x S(d1) + S(d2..d6) + sum of feature MSEs. Rerunning resumes.
Exports ``OUT/gt_encoder.safetensors`` and ``OUT/refiner.safetensors`` (node format).
"""

from __future__ import annotations

import argparse

from cartoonseg.config import MAX_CANVAS
from cartoonseg.training.refiner import RefinerTrainConfig, train_refiner

from ._cli import add_data_args, add_run_args, check_option, common_config, parser, run_training, train_in_group


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m train.train_refiner``."""
    ap = parser("train.train_refiner", __doc__)
    add_data_args(ap, "output folder (checkpoints, log.jsonl, gt_encoder/refiner.safetensors)")
    ap.add_argument("--preset", default="isnet", choices=["isnet", "tiny"], help="refiner size")
    ap.add_argument("--size", type=int, default=720, help=f"training canvas, in [32, {MAX_CANVAS}]")
    ap.add_argument("--epochs", type=int, default=60, help="refiner epochs, >= 1")
    ap.add_argument("--gt-epochs", type=int, default=4, help="GT-encoder epochs, >= 0")
    ap.add_argument("--gt-encoder", default=None, help="use this trained GT encoder (skips its training)")
    ap.add_argument("--no-gt-encoder", action="store_true", help="train without L_IS")
    ap.add_argument("--no-ppa", action="store_true", help="plain BCE instead of the structure loss (ablation)")
    ap.add_argument("--batch-size", type=int, default=8, help="samples per process, >= 1")
    ap.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, > 0")
    ap.add_argument("--weight-decay", type=float, default=5e-3, help="AdamW weight decay, >= 0")
    ap.add_argument("--rect-prob", type=float, default=0.25, help="share of box-rectangle coarse masks, in [0, 1]")
    ap.add_argument("--morph-prob", type=float, default=0.5, help="share of dilated/eroded coarse masks, in [0, 1]")
    add_run_args(ap, max_iters_help="stop each phase after this many iterations",
                 resume_help="ignore existing checkpoints")
    return ap


def check_args(args: argparse.Namespace) -> None:
    """Range-check the refiner's options before anything is built (``ValueError`` naming the option)."""
    check_option("--size", args.size, 32, MAX_CANVAS)
    check_option("--epochs", args.epochs, 1)
    check_option("--gt-epochs", args.gt_epochs, 0)
    check_option("--batch-size", args.batch_size, 1)
    check_option("--lr", args.lr, 0, above=True)
    check_option("--weight-decay", args.weight_decay, 0)
    check_option("--rect-prob", args.rect_prob, 0, 1)
    check_option("--morph-prob", args.morph_prob, 0, 1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def config(resolve_data: bool) -> RefinerTrainConfig:
        check_args(args)
        return RefinerTrainConfig(
            **common_config(args, resolve_data=resolve_data),
            preset=args.preset,
            size=args.size,
            epochs=args.epochs,
            gt_epochs=args.gt_epochs,
            gt_encoder=args.gt_encoder,
            use_gt_encoder=not args.no_gt_encoder,
            use_ppa=not args.no_ppa,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            ins_rect_prob=args.rect_prob,
            aug_ins_prob=args.morph_prob,
        )

    return run_training(lambda: train_in_group(config, args, train_refiner))


if __name__ == "__main__":
    raise SystemExit(main())
