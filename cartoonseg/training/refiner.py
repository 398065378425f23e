"""Stage-2 training: the IS-Net refiner with ground-truth-encoder supervision (Paper §4.2-4.3, eq. 5-7;
pipeline_spec §3.2).

Two phases, each resumable:

1. **GT encoder** (:class:`~cartoonseg.models.isnet.ISNetGTEncoder`): a mask -> mask auto-encoder trained with the
   structure loss on all six side outputs (weights 1) for ``gt_epochs`` epochs (SkyTNT's port: 4; the DIS
   recipe trains until max-F > 0.99), then frozen and saved as ``<out>/gt_encoder.safetensors``;
2. **Refiner** (:class:`~cartoonseg.models.isnet.ISNetDIS`, 4 input channels): ``L = L_ppa + L_IS`` with the
   structure loss on ``d1..d6`` (weight 5 on d1, the final output, as the released code does) and the mean MSE
   between its six decoder features and the frozen encoder's features of the ground truth; AdamW lr 1e-3,
   weight decay 5e-3, 60 epochs, constant learning rate (the paper states no schedule), training crops at 720.

The refiner is exported as ``<out>/refiner.safetensors`` (node format).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..build import build_refiner
from ..checkpoint import save_weights
from ..config import refiner_config
from ..outputs import fsync_dir
from ..models.isnet import ISNetGTEncoder
from ..sharding import agree_on, every_rank
from .coco import check_images, check_images_mode, load_coco
from .distributed import DistContext, cleanup, setup
from .engine import LoopConfig, check_resumed_settings, check_training_folder, discard_loop, run_loop, state_digest
from .losses import gt_encoder_loss, refiner_loss
from .refine_data import RefineAugConfig, RefineTrainSet, collate_refine
from .state import write_tensors

__all__ = ["RefinerTrainConfig", "load_gt_encoder", "save_gt_encoder", "train_refiner"]


@dataclass(frozen=True)
class RefinerTrainConfig:
    """Stage-2 run settings.

    Attributes:
        train_ann: COCO JSON (optionally with ``pred_segmentations`` from ``train.dump_predictions``).
        out_dir: output folder.
        image_root: image folder (None: resolved next to the JSON).
        preset: refiner preset (``isnet`` = released size; ``tiny`` for tests).
        size: training canvas (720).
        epochs: refiner epochs (60).
        gt_epochs: GT-encoder epochs (0 with ``gt_encoder`` given: reuse that file).
        gt_encoder: path of a trained GT encoder (skips phase 1).
        use_gt_encoder: False drops L_IS (trains with L_ppa only).
        use_ppa: False replaces the structure loss by plain BCE (the "w/o L_ppa" ablation).
        batch_size: samples per process (not stated in the paper).
        lr, weight_decay: AdamW (1e-3, 5e-3).
        gt_lr: GT-encoder learning rate (1e-3, Adam in DIS; AdamW without decay here).
        ins_rect_prob, aug_ins_prob: coarse-mask simulation probabilities (0.25, 0.5).
        amp, num_workers, seed, log_interval, ckpt_interval, max_iters, resume, device: loop settings.
        allow_changes: resume a checkpoint whose settings differ (see :class:`LoopConfig`).
        check_images: check every image the refiner reads once before training
            (:func:`~cartoonseg.training.coco.check_images`), so a corrupt file stops the run at its start:
            ``"fast"`` (the default; or True) headers and file ends, ``"full"`` also decodes each image, ``"none"``
            (or False).
    """

    train_ann: str
    out_dir: str
    image_root: str | None = None
    preset: str = "isnet"
    size: int = 720
    epochs: int = 60
    gt_epochs: int = 4
    gt_encoder: str | None = None
    use_gt_encoder: bool = True
    use_ppa: bool = True
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 5e-3
    gt_lr: float = 1e-3
    ins_rect_prob: float = 0.25
    aug_ins_prob: float = 0.5
    amp: str = "auto"
    num_workers: int = 4
    seed: int = 0
    log_interval: int = 50
    ckpt_interval: int = 0
    max_iters: int | None = None
    resume: bool = True
    device: str = "auto"
    allow_changes: bool = False
    check_images: str | bool = "fast"

    def __post_init__(self) -> None:
        check_images_mode(self.check_images)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def save_gt_encoder(encoder: ISNetGTEncoder, width: float, path: str | Path) -> Path:
    """safetensors with ``{"kind": "gt_encoder", "width": w}`` in the header metadata; written complete and flushed
    under a temporary name, then renamed (a kill never leaves a half file at ``path``). A failed write (full disk,
    unwritable folder) raises an ``OSError`` naming ``path`` (:func:`~cartoonseg.training.state.write_tensors`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    tmp = path.with_name(path.name + ".partial")
    write_tensors(tensors, tmp, path, {"cartoonseg": json.dumps({"kind": "gt_encoder", "width": width})})
    tmp.replace(path)
    fsync_dir(path.parent)
    return path


def load_gt_encoder(path: str | Path, device: str | torch.device = "cpu") -> ISNetGTEncoder:
    """Load a file written by :func:`save_gt_encoder` (strict), frozen and in eval mode."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        meta = json.loads((fh.metadata() or {}).get("cartoonseg", "{}"))
        if meta.get("kind") != "gt_encoder":
            raise ValueError(f"{path} is not a cartoonseg GT-encoder file (metadata kind {meta.get('kind')!r})")
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    enc = ISNetGTEncoder(1, 1, width=float(meta["width"]))
    enc.load_state_dict(state, strict=True)
    return _freeze(enc.to(device))


def _freeze(enc: nn.Module) -> nn.Module:
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc


def _loop(cfg: RefinerTrainConfig, name: str, epochs: int, lr: float, wd: float) -> LoopConfig:
    return LoopConfig(
        out_dir=cfg.out_dir,
        name=name,
        epochs=epochs,
        batch_size=cfg.batch_size,
        lr=lr,
        weight_decay=wd,
        warmup_iters=0,
        cosine_start_epoch=epochs,  # constant learning rate
        ema=False,
        amp=cfg.amp,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
        log_interval=cfg.log_interval,
        ckpt_interval=cfg.ckpt_interval,
        max_iters=cfg.max_iters,
        resume=cfg.resume,
        allow_changes=cfg.allow_changes,
    )


def _dataset(cfg: RefinerTrainConfig, aug: RefineAugConfig) -> tuple[Any, RefineTrainSet]:
    coco = load_coco(cfg.train_ann, cfg.image_root)
    return coco, RefineTrainSet(coco, aug, seed=cfg.seed)


def _have_gt_encoder(cfg: RefinerTrainConfig, path: Path) -> bool:
    """Whether the GT encoder file is there (a given ``--gt-encoder`` must be: ``FileNotFoundError``)."""
    if cfg.gt_encoder and not path.is_file():
        raise FileNotFoundError(f"--gt-encoder {path} not found")
    return path.is_file()


def train_refiner(cfg: RefinerTrainConfig, ctx: DistContext | None = None) -> dict[str, Any]:
    """Run both stage-2 phases; returns a summary (paths, steps, last losses). ``max_iters`` applies to each
    phase's global step count separately."""
    own_ctx = ctx is None
    ctx = ctx or setup(cfg.device)
    try:
        out = Path(cfg.out_dir)
        # the output policy first, before anything is read, trained or deleted (--no-resume): a folder of ours,
        # and no export over an input
        exports = ("refiner.safetensors",) + (() if cfg.gt_encoder else ("gt_encoder.safetensors",))
        inputs = (cfg.gt_encoder, cfg.train_ann)
        # (rank 0 checks; its refusal ends every rank with its message, see agree_on)
        agree_on(lambda: check_training_folder(out, exports=exports, inputs=inputs), ctx)
        torch.manual_seed(cfg.seed)
        aug = RefineAugConfig(size=cfg.size, ins_rect_prob=cfg.ins_rect_prob, aug_ins_prob=cfg.aug_ins_prob)
        # every rank reads the annotations (and below the GT encoder) itself: a failure on one rank's node ends
        # every rank at once with its error, naming the rank (every_rank)
        coco, dataset = every_rank(lambda: _dataset(cfg, aug), ctx)
        mode = check_images_mode(cfg.check_images)
        if mode != "none":  # the images it reads (those with a mask), every rank (each decodes its share only)
            check_images([coco.images[i] for i, _ in dataset.items], progress=ctx.is_main, full=mode == "full",
                         ctx=ctx)
        rcfg = refiner_config(cfg.preset, refine_size=cfg.size)
        summary: dict[str, Any] = {"world_size": ctx.world_size, "rank": ctx.rank}

        if not cfg.resume:  # starting over: nothing of an earlier run here is resumed or reused later
            discard_loop(ctx, out, "refiner")
            if not cfg.gt_encoder:
                agree_on(lambda: (out / "gt_encoder.safetensors").unlink(missing_ok=True), ctx)
        encoder = None
        if cfg.use_gt_encoder:
            enc_path = Path(cfg.gt_encoder) if cfg.gt_encoder else out / "gt_encoder.safetensors"
            gt_loop = _loop(cfg, "gt_encoder", cfg.gt_epochs, cfg.gt_lr, 0.0)
            gt_run = dict(cfg.to_dict(), phase="gt_encoder")
            # a given --gt-encoder is read by every rank, so each checks it has the file; the one this run trains
            # in --out is there when rank 0 sees it (every rank trains it, or none)
            have = every_rank(lambda: _have_gt_encoder(cfg, enc_path), ctx)
            have = have if cfg.gt_encoder else agree_on(lambda: have, ctx)
            if have and not cfg.gt_encoder:
                # the encoder this run trained earlier is reused only with the settings it was trained with (a run
                # killed before the refiner's first checkpoint and rerun with other settings would mix them)
                every_rank(lambda: check_resumed_settings(gt_loop, gt_run, ctx.world_size), ctx)
            if not have:
                if cfg.gt_epochs < 1:
                    raise ValueError("use_gt_encoder needs gt_epochs >= 1 or an existing gt_encoder file")
                enc = ISNetGTEncoder(1, 1, width=rcfg.width).to(ctx.device).train()

                def enc_loss(wrapped, raw, batch, device):
                    mask = batch["mask"].to(device, non_blocking=True)
                    sides, _ = wrapped(mask)
                    return gt_encoder_loss(sides, mask)

                r = run_loop(
                    ctx,
                    enc,
                    dataset,
                    collate_refine,
                    enc_loss,
                    gt_loop,
                    run_config=gt_run,
                    on_epoch_start=dataset.set_epoch,
                )
                summary["gt_encoder_steps"] = r.global_step
                summary["gt_encoder_last"] = r.last_log
                if not r.finished:
                    return summary
                agree_on(lambda: save_gt_encoder(enc, rcfg.width, enc_path), ctx)  # rank 0's error ends every rank
            encoder = every_rank(lambda: load_gt_encoder(enc_path, ctx.device), ctx)
            if encoder.width != rcfg.width:
                raise ValueError(f"GT encoder {enc_path} was trained for a refiner of width {encoder.width}; the "
                                 f"preset {cfg.preset!r} has width {rcfg.width}: give one of its size, or train one "
                                 f"(without --gt-encoder, in a new --out or with --no-resume)")
            summary["gt_encoder"] = str(enc_path)

        # phase 2 starts from its own seed, so its initial weights do not depend on whether phase 1 ran in this
        # process or in an earlier (killed) one: a restarted run then matches an uninterrupted one
        torch.manual_seed(cfg.seed + 1)
        model = build_refiner(rcfg).to(ctx.device).train()
        if ctx.distributed and ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

        def ref_loss(wrapped, raw, batch, device):
            x = batch["x"].to(device, non_blocking=True)
            mask = batch["mask"].to(device, non_blocking=True)
            sides, feats = wrapped(x)
            gt_feats = None
            if encoder is not None:
                with torch.no_grad():
                    gt_feats = encoder(mask)[1]
            return refiner_loss(sides, mask, feats if encoder is not None else None, gt_feats, use_ppa=cfg.use_ppa)

        r = run_loop(
            ctx,
            model,
            dataset,
            collate_refine,
            ref_loss,
            _loop(cfg, "refiner", cfg.epochs, cfg.lr, cfg.weight_decay),
            run_config=dict(cfg.to_dict(), phase="refiner"),
            on_epoch_start=dataset.set_epoch,
        )
        summary.update(
            {
                "global_step": r.global_step,
                "finished": r.finished,
                "last": r.last_log,
                "state_digest": state_digest(model.state_dict()),
            }
        )
        if r.finished:

            def write_export() -> str:
                export = build_refiner(rcfg)
                export.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
                return str(save_weights(export.eval(), out / "refiner.safetensors",
                                        inputs=tuple(p for p in inputs if p)))

            summary["export"] = agree_on(write_export, ctx)  # rank 0 writes; its error ends every rank
        return summary
    finally:
        if own_ctx:
            cleanup(ctx)
