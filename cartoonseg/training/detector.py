"""Stage-1 training: RTMDet-Ins on a COCO-format cartoon dataset (Paper §4.1, §4.3; pipeline_spec §3.1).

Defaults are the paper's recipe where it states one and the upstream RTMDet-Ins recipe elsewhere:
60 epochs, AdamW with weight decay 0.05 and no decay on norms/biases, learning rate 0.004 x (total batch / 256)
(the upstream base rate with linear scaling; batch 64 -> 0.001), linear warm-up over 1000 iterations from 1e-5x,
cosine annealing to 0.05x over the second half, EMA (momentum 2e-4), mosaic + mixup switched off for the last
``no_aug_epochs`` epochs, losses QFL (1) + GIoU (2) + Dice (2) with dynamic soft label assignment.

:func:`train_detector` runs in one process or under ``torchrun`` (one process per GPU) and ends by exporting the
EMA weights as ``<out>/detector.safetensors`` (the node format: safetensors with the JSON config in its header).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..build import build_detector
from ..checkpoint import load_detector, save_weights
from ..config import detector_config
from ..models.rtmdet_ins import RTMDetIns
from ..sharding import agree_on, every_rank
from .coco import check_images, check_images_mode, load_coco
from .det_data import DetAugConfig, DetectionTrainSet, collate_detection
from .distributed import DistContext, cleanup, setup
from .engine import LoopConfig, check_training_folder, run_loop, state_digest
from .optim import init_rtmdet_head
from .rtmdet_loss import RTMDetInsLossConfig, rtmdet_ins_loss, targets_to_device

__all__ = [
    "DETECTOR_RECIPES",
    "DetectorTrainConfig",
    "default_lr",
    "detector_recipe",
    "init_detector_from",
    "train_detector",
]


def default_lr(total_batch: int) -> float:
    """Upstream RTMDet base learning rate 0.004 at batch 256, scaled linearly."""
    return 0.004 * total_batch / 256


@dataclass(frozen=True)
class DetectorTrainConfig:
    """Everything a stage-1 run needs (see the module docstring for the defaults' sources).

    Attributes:
        train_ann: COCO JSON of the training set.
        out_dir: output folder.
        image_root: image folder (None: resolved next to the JSON, see :func:`load_coco`).
        preset: detector preset (tiny/s/m/l/x; the paper uses l).
        init: checkpoint to start from (released ``rtmdetl_e60.ckpt``, any mmdet RTMDet-Ins checkpoint, or our
            safetensors) of the same preset; only the classification layers may differ (an 80-class head keeps
            its fresh initialisation), a checkpoint of another preset is refused (see :func:`init_detector_from`).
        img_size: training canvas (640).
        epochs: training epochs (60).
        batch_size: images per process (16 per GPU in the paper, 4 GPUs).
        lr: learning rate; None = :func:`default_lr` of the total batch.
        weight_decay: 0.05.
        warmup_iters: 1000.
        no_aug_epochs: final epochs without mosaic/mixup (upstream: 20 of 300; scaled here to a third of the
            run at most).
        ema: keep an EMA and export it.
        amp, num_workers, seed, log_interval, ckpt_interval, max_iters, resume, device: loop settings.
        allow_changes: resume a checkpoint whose settings differ (see :class:`LoopConfig`).
        mask_loss_stride: see :class:`RTMDetInsLossConfig`.
        mosaic, mixup: strong augmentations on/off.
        sync_bn: convert BatchNorm to SyncBatchNorm when running on several GPUs.
        eval_interval: iterations between evaluations by ``train_detector``'s ``evaluator`` (0: at the end only).
        time_limit_s: stop resumably after this much training wall time (evaluations excluded).
        check_images: check every training image once before training
            (:func:`~cartoonseg.training.coco.check_images`), so a corrupt file stops the run at its start:
            ``"fast"`` (the default; or True) headers and file ends, ``"full"`` also decodes each image, ``"none"``
            (or False).
        no_mosaic_resize_ratio: (min, max) random resize ratio of the pipeline without mosaic (the final
            ``no_aug_epochs``, and whole runs with ``mosaic`` off): the RTMDet-Ins-L config's ``(0.1, 2.0)``.
    """

    train_ann: str
    out_dir: str
    image_root: str | None = None
    preset: str = "l"
    init: str | None = None
    img_size: int = 640
    epochs: int = 60
    batch_size: int = 16
    lr: float | None = None
    weight_decay: float = 0.05
    warmup_iters: int = 1000
    no_aug_epochs: int = 20
    ema: bool = True
    amp: str = "auto"
    num_workers: int = 4
    seed: int = 0
    log_interval: int = 50
    ckpt_interval: int = 0
    max_iters: int | None = None
    resume: bool = True
    device: str = "auto"
    allow_changes: bool = False
    mask_loss_stride: int = 4
    mosaic: bool = True
    mixup: bool = True
    sync_bn: bool = True
    eval_interval: int = 0
    time_limit_s: float | None = None
    check_images: str | bool = "fast"
    no_mosaic_resize_ratio: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        check_images_mode(self.check_images)
        lo, hi = (float(v) for v in self.no_mosaic_resize_ratio)
        if not (0 < lo <= hi and hi < float("inf")):
            raise ValueError(f"no_mosaic_resize_ratio must be (min, max) with 0 < min <= max, "
                             f"got {self.no_mosaic_resize_ratio}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Named training recipes: field overrides of :class:`DetectorTrainConfig` (whose defaults are ``paper``).
#: ``tiny-cpu`` trains the tiny detector on a 2-core CPU in minutes (bench/train_convergence.py records what it
#: reaches): 16 epochs (1200 steps on 600 images: ~15 min on 2 quiet AVX2 threads, the schedule sized to the
#: 20-minute budget; 6 epochs stopped at Box AP50 0.76), 192-px canvas, batch 8, lr 2e-3 (linear scaling from
#: 0.004 at 256 would give 1.25e-4, far too slow for a few hundred steps from scratch), 50 warm-up steps, no
#: mosaic/mixup (on a few hundred synthetic images the stock strong augmentation costs more steps than it saves),
#: one data worker; resize ratio 0.5-2 (what the convergence figures were measured with: at 192 px the config's
#: 0.1 would shrink a sample to 19 px).
DETECTOR_RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "tiny-cpu": {
        "preset": "tiny",
        "img_size": 192,
        "epochs": 16,
        "batch_size": 8,
        "lr": 2e-3,
        "warmup_iters": 50,
        "mosaic": False,
        "mixup": False,
        "no_aug_epochs": 0,
        "num_workers": 1,
        "device": "cpu",
        "amp": "none",
        "no_mosaic_resize_ratio": (0.5, 2.0),
    },
}


def detector_recipe(name: str, **overrides: Any) -> DetectorTrainConfig:
    """The :class:`DetectorTrainConfig` of recipe ``name`` (see :data:`DETECTOR_RECIPES`) with ``overrides``
    (``train_ann`` and ``out_dir`` are required)."""
    if name not in DETECTOR_RECIPES:
        raise ValueError(f"unknown training recipe {name!r}; allowed: {sorted(DETECTOR_RECIPES)}")
    return DetectorTrainConfig(**{**DETECTOR_RECIPES[name], **overrides})


#: the only tensors an ``--init`` checkpoint may hold in another shape: the classification layers, whose shape
#: follows the class count (an 80-class COCO model initialising a 1-class run)
CLASS_DEPENDENT_PREFIX = "bbox_head.rtm_cls."


def _preset_of(config: Any) -> str:
    from ..config import DETECTOR_PRESETS

    for name, preset in DETECTOR_PRESETS.items():
        if (preset.deepen_factor, preset.widen_factor) == (config.deepen_factor, config.widen_factor):
            return f"preset {name!r}"
    return f"deepen_factor {config.deepen_factor}, widen_factor {config.widen_factor}"


def init_detector_from(model: RTMDetIns, path: str | Path) -> dict[str, list[str]]:
    """Copy the tensors of the checkpoint at ``path`` into ``model``; only the classification layers
    (:data:`CLASS_DEPENDENT_PREFIX`) may differ in shape (another class count) and keep their fresh initialisation.

    Raises:
        ValueError: the checkpoint is another architecture (another preset): names the two and lists the first
            tensors missing from it, extra in it and of another shape. Nothing is copied then.

    Returns:
        ``{"loaded": [...], "skipped": [...], "missing": [...]}`` key lists (skipped = the class-count layers).
    """
    source = load_detector(path)
    src = source.state_dict()
    dst = model.state_dict()
    missing = [k for k in dst if k not in src]
    unexpected = [k for k in src if k not in dst]
    skipped = [k for k in dst if k in src and tuple(src[k].shape) != tuple(dst[k].shape)]
    other = [k for k in skipped if not k.startswith(CLASS_DEPENDENT_PREFIX)]
    if missing or unexpected or other:
        parts = []
        for label, keys in (("missing from it", missing), ("not in the model", unexpected)):
            if keys:
                parts.append(f"{len(keys)} tensors {label} ({', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''})")
        if other:
            shown = ", ".join(f"{k} {tuple(src[k].shape)} vs {tuple(dst[k].shape)}" for k in other[:3])
            parts.append(f"{len(other)} tensors of another shape ({shown}{' ...' if len(other) > 3 else ''})")
        raise ValueError(
            f"--init {path} is a detector of {_preset_of(source.config)}, not of the run's "
            f"{_preset_of(model.config)}: {'; '.join(parts)}. Use the checkpoint's preset, or train without --init")
    loaded = []
    with torch.no_grad():
        for k, v in dst.items():
            if k not in skipped:
                v.copy_(src[k])
                loaded.append(k)
    return {"loaded": loaded, "skipped": skipped, "missing": missing}


def _build(cfg: DetectorTrainConfig, num_classes: int) -> tuple[RTMDetIns, dict[str, Any]]:
    model = build_detector(detector_config(cfg.preset, num_classes=num_classes, det_size=cfg.img_size))
    init_rtmdet_head(model)
    report: dict[str, Any] = {"init": None}
    if cfg.init:
        r = init_detector_from(model, cfg.init)
        report = {"init": str(cfg.init), "loaded": len(r["loaded"]), "skipped": r["skipped"], "missing": r["missing"]}
    return model, report


def train_detector(
    cfg: DetectorTrainConfig,
    ctx: DistContext | None = None,
    evaluator: Callable[[RTMDetIns], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Run stage-1 training; returns a summary (export path, steps, last losses).

    The caller may pass a :class:`DistContext`; by default it is made from the ``torchrun`` environment and torn
    down at the end. ``evaluator`` (rank 0) receives an eval-mode detector holding the weights that would be
    exported (the EMA when kept) every ``cfg.eval_interval`` iterations and at the end; its metrics go to the
    log as ``"event": "eval"`` lines.
    """
    own_ctx = ctx is None
    ctx = ctx or setup(cfg.device)
    try:
        # the output policy first, before anything is read or trained: a folder of ours, no export over an input
        inputs = tuple(p for p in (cfg.init, cfg.train_ann) if p)
        # (rank 0 checks; its refusal ends every rank with its message, see agree_on)
        agree_on(lambda: check_training_folder(cfg.out_dir, exports=("detector.safetensors",), inputs=inputs), ctx)
        torch.manual_seed(cfg.seed)
        # every rank reads the annotations and the --init checkpoint itself (per-node storage may differ): a
        # failure on one rank ends every rank at once with its error, naming the rank (every_rank)
        coco = every_rank(lambda: load_coco(cfg.train_ann, cfg.image_root), ctx)
        mode = check_images_mode(cfg.check_images)
        if mode != "none":  # every rank, the same verdict on all (each decodes its share only)
            check_images(coco.images, progress=ctx.is_main, full=mode == "full", ctx=ctx)
        model, init_report = every_rank(lambda: _build(cfg, coco.num_classes), ctx)
        model.to(ctx.device).train()
        if ctx.distributed and ctx.device.type == "cuda" and cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        aug = DetAugConfig(img_size=cfg.img_size, mosaic=cfg.mosaic, mixup=cfg.mixup,
                           no_mosaic_resize_ratio=tuple(cfg.no_mosaic_resize_ratio))
        dataset = DetectionTrainSet(coco, aug, seed=cfg.seed)
        lr = cfg.lr if cfg.lr is not None else default_lr(cfg.batch_size * ctx.world_size)
        no_aug = min(cfg.no_aug_epochs, cfg.epochs // 3) if cfg.mosaic else 0
        loss_cfg = RTMDetInsLossConfig(mask_loss_stride=cfg.mask_loss_stride)
        loop = LoopConfig(
            out_dir=cfg.out_dir,
            name="detector",
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=lr,
            weight_decay=cfg.weight_decay,
            warmup_iters=cfg.warmup_iters,
            ema=cfg.ema,
            amp=cfg.amp,
            num_workers=cfg.num_workers,
            seed=cfg.seed,
            log_interval=cfg.log_interval,
            ckpt_interval=cfg.ckpt_interval,
            max_iters=cfg.max_iters,
            resume=cfg.resume,
            allow_changes=cfg.allow_changes,
            eval_interval=cfg.eval_interval,
            time_limit_s=cfg.time_limit_s,
        )

        def on_epoch(epoch: int) -> None:
            dataset.set_epoch(epoch, strong=epoch < cfg.epochs - no_aug)

        def loss_fn(wrapped: nn.Module, raw: nn.Module, batch: dict[str, Any], device: torch.device):
            x = raw.normalize(batch["img"].to(device, non_blocking=True))
            outputs = wrapped(x)
            return rtmdet_ins_loss(raw, outputs, targets_to_device(batch["targets"], device), loss_cfg)

        run_cfg = dict(cfg.to_dict(), num_classes=coco.num_classes, categories=coco.category_names, lr=lr)
        raw = model

        def evaluate(_model: nn.Module, ema: Any) -> dict[str, float]:
            net = build_detector(raw.config)
            state = ema.state_dict() if ema is not None else raw.state_dict()
            net.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
            return evaluator(net.to(ctx.device).eval())

        result = run_loop(
            ctx,
            model,
            dataset,
            collate_detection,
            loss_fn,
            loop,
            run_config=run_cfg,
            on_epoch_start=on_epoch,
            evaluate=evaluate if evaluator is not None else None,
        )
        summary: dict[str, Any] = {
            "global_step": result.global_step,
            "finished": result.finished,
            "last": result.last_log,
            "init": init_report,
            "world_size": ctx.world_size,
            "rank": ctx.rank,
            "state_digest": state_digest(model.state_dict()),
        }
        if result.finished:

            def write_export() -> str:
                export = build_detector(model.config)
                state = result.ema.state_dict() if result.ema is not None else model.state_dict()
                export.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
                return str(save_weights(export.eval(), Path(cfg.out_dir) / "detector.safetensors", inputs=inputs))

            summary["export"] = agree_on(write_export, ctx)  # rank 0 writes; its error ends every rank
        return summary
    finally:
        if own_ctx:
            cleanup(ctx)
