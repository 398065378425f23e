"""Stage 1: train the RTMDet-Ins detector on a COCO-format cartoon dataset (arXiv 2312.01943 §4.1, §4.3).

    python -m train.train_detector --data DIR --out DIR [--preset tiny|s|m|l|x] [--epochs E] [--init CKPT]
    torchrun --nproc-per-node N -m train.train_detector --data DIR --out DIR ...
    python -m train.train_detector --data DIR --out DIR --preset tiny-cpu      # learns in minutes on a 2-core CPU

``--data`` is a COCO JSON or a dataset folder (``annotations/det_train.json`` + images, as ``train.synthesize``
writes). Defaults are the paper's recipe (RTMDet-Ins-L, 60 epochs, AdamW wd 0.05, 16 images per GPU, lr 0.004 x
total batch / 256, warm-up 1000 iterations, cosine over the second half, EMA). Rerunning the same command resumes
from ``OUT/detector_last.*``. The EMA weights are exported to ``OUT/detector.safetensors`` (node format).
"""

from __future__ import annotations

import argparse
import sys

from cartoonseg.config import MAX_CANVAS
from cartoonseg.training.detector import DETECTOR_RECIPES, DetectorTrainConfig, detector_recipe, train_detector

from ._cli import add_data_args, add_run_args, check_option, common_config, parser, run_training, train_in_group


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m train.train_detector``."""
    ap = parser("train.train_detector", __doc__)
    add_data_args(ap, "output folder (checkpoints, log.jsonl, detector.safetensors)")
    ap.add_argument("--preset", default="l", choices=["tiny", "s", "m", "l", "x", "tiny-cpu"],
                    help="model size (paper: l), or tiny-cpu: the tiny model with the CPU recipe (192 px, batch 8, "
                    "lr 2e-3, 50 warm-up steps, 16 epochs, no mosaic/mixup, 1 worker); explicit flags override it")
    ap.add_argument(
        "--init", default=None, help="start from this checkpoint of the same --preset (rtmdetl_e60.ckpt, mmdet "
        "RTMDet-Ins, ours); only the class-count layers may differ, another preset is refused"
    )
    ap.add_argument("--img-size", type=int, default=None,
                    help=f"training canvas, a multiple of 32 in [32, {MAX_CANVAS}] (default 640)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs, >= 1 (default 60)")
    ap.add_argument("--batch-size", type=int, default=None, help="images per process, >= 1 (default 16)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate, > 0 (default 0.004 * total batch / 256)")
    ap.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay, >= 0")
    ap.add_argument("--warmup-iters", type=int, default=None, help="linear warm-up iterations, >= 0 (default 1000)")
    ap.add_argument("--no-aug-epochs", type=int, default=None,
                    help="final epochs without mosaic/mixup, >= 0 (default 20)")
    ap.add_argument("--no-mosaic", action="store_true", help="disable mosaic and mixup")
    ap.add_argument("--no-mixup", action="store_true", help="disable mixup")
    ap.add_argument("--no-ema", action="store_true", help="no EMA (export the raw weights)")
    ap.add_argument("--mask-loss-stride", type=int, default=4, choices=[1, 2, 4, 8], help="mask loss stride")
    add_run_args(ap, max_iters_help="stop after this many iterations (resumable)",
                 resume_help="ignore an existing OUT/detector_last checkpoint")
    return ap


def config_from_args(argv: list[str] | None = None, *, resolve_data: bool = True) -> DetectorTrainConfig:
    """The :class:`DetectorTrainConfig` of a command line (without running anything); option values out of range
    raise ``ValueError`` naming the option. ``resolve_data``: see :func:`train._cli.common_config`."""
    args = build_parser().parse_args(argv)
    if args.img_size is not None and (args.img_size % 32 or not 32 <= args.img_size <= MAX_CANVAS):
        raise ValueError(f"--img-size must be a multiple of 32 in [32, {MAX_CANVAS}], got {args.img_size}")
    check_option("--epochs", args.epochs, 1)
    check_option("--batch-size", args.batch_size, 1)
    check_option("--lr", args.lr, 0, above=True)
    check_option("--weight-decay", args.weight_decay, 0)
    check_option("--warmup-iters", args.warmup_iters, 0)
    check_option("--no-aug-epochs", args.no_aug_epochs, 0)
    recipe = "tiny-cpu" if args.preset == "tiny-cpu" else "paper"
    base = DETECTOR_RECIPES[recipe]
    given = {
        "img_size": args.img_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_iters": args.warmup_iters,
        "no_aug_epochs": args.no_aug_epochs,
    }
    fields = {k: v for k, v in given.items() if v is not None}
    common = common_config(args, resolve_data=resolve_data)
    if recipe == "tiny-cpu":  # the recipe's run settings unless given on the command line
        for key, flag in (("num_workers", "--workers"), ("device", "--device"), ("amp", "--amp")):
            if not any(a == flag or a.startswith(flag + "=") for a in (argv if argv is not None else sys.argv[1:])):
                common.pop(key)
    else:
        fields["preset"] = args.preset
    cfg = detector_recipe(
        recipe,
        **common,
        **fields,
        init=args.init,
        weight_decay=args.weight_decay,
        ema=not args.no_ema,
        mask_loss_stride=args.mask_loss_stride,
        mosaic=base.get("mosaic", True) and not args.no_mosaic,
        mixup=base.get("mixup", True) and not (args.no_mixup or args.no_mosaic),
    )
    return cfg


def main(argv: list[str] | None = None) -> int:
    def run() -> dict:
        args = build_parser().parse_args(argv)
        return train_in_group(lambda resolve: config_from_args(argv, resolve_data=resolve), args, train_detector)

    return run_training(run)


if __name__ == "__main__":
    raise SystemExit(main())
