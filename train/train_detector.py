"""Stage 1: train the RTMDet-Ins detector on a COCO-format cartoon dataset (arXiv 2312.01943 §4.1, §4.3).

    python -m train.train_detector --data DIR --out DIR [--preset tiny|s|m|l|x] [--epochs E] [--init CKPT]
    torchrun --nproc-per-node N -m train.train_detector --data DIR --out DIR ...

``--data`` is a COCO JSON or a dataset folder (``annotations/det_train.json`` + images, as ``train.synthesize``
writes). Defaults are the paper's recipe (RTMDet-Ins-L, 60 epochs, AdamW wd 0.05, 16 images per GPU, lr 0.004 x
total batch / 256, warm-up 1000 iterations, cosine over the second half, EMA). Rerunning the same command resumes
from ``OUT/detector_last.*``. The EMA weights are exported to ``OUT/detector.safetensors`` (node format).
"""

from __future__ import annotations

import argparse

from cartoonseg.training.detector import DetectorTrainConfig, train_detector

from ._cli import add_data_args, add_run_args, common_config, print_summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.train_detector", description=__doc__.splitlines()[0])
    add_data_args(ap, "output folder (checkpoints, log.jsonl, detector.safetensors)")
    ap.add_argument("--preset", default="l", choices=["tiny", "s", "m", "l", "x"], help="model size (paper: l)")
    ap.add_argument(
        "--init", default=None, help="start from this checkpoint (rtmdetl_e60.ckpt, mmdet RTMDet-Ins, ours)"
    )
    ap.add_argument("--img-size", type=int, default=640, help="training canvas (default 640)")
    ap.add_argument("--epochs", type=int, default=60, help="epochs (default 60)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per process (default 16)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default 0.004 * total batch / 256)")
    ap.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    ap.add_argument("--warmup-iters", type=int, default=1000, help="linear warm-up iterations (default 1000)")
    ap.add_argument("--no-aug-epochs", type=int, default=20, help="final epochs without mosaic/mixup (default 20)")
    ap.add_argument("--no-mosaic", action="store_true", help="disable mosaic and mixup")
    ap.add_argument("--no-mixup", action="store_true", help="disable mixup")
    ap.add_argument("--no-ema", action="store_true", help="no EMA (export the raw weights)")
    ap.add_argument("--mask-loss-stride", type=int, default=4, choices=[1, 2, 4, 8], help="mask loss stride (4)")
    add_run_args(ap, max_iters_help="stop after this many iterations (resumable)",
                 resume_help="ignore an existing OUT/detector_last checkpoint")
    args = ap.parse_args(argv)
    cfg = DetectorTrainConfig(
        **common_config(args),
        preset=args.preset,
        init=args.init,
        img_size=args.img_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_iters=args.warmup_iters,
        no_aug_epochs=args.no_aug_epochs,
        ema=not args.no_ema,
        mask_loss_stride=args.mask_loss_stride,
        mosaic=not args.no_mosaic,
        mixup=not (args.no_mixup or args.no_mosaic),
    )
    print_summary(train_detector(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
