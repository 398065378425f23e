"""A plain-PyTorch training loop shared by both stages (CartoonSegmentation §4.3 recipes).

:func:`run_loop` trains one model on one dataset with AdamW (decay-free norms/biases), a per-iteration
warm-up + cosine schedule, optional EMA, optional mixed precision on CUDA, and ``DistributedDataParallel``
when started by ``torchrun``. Rank 0 logs JSON lines (stdout and ``<out>/log.jsonl``) and writes resumable
checkpoints (``<out>/<name>_last.safetensors`` + ``.json``, see :mod:`cartoonseg.training.state`); a resumed
run continues at the exact sample, learning rate, EMA step and RNG state where the checkpoint was taken.

Kill safety: checkpoints are written atomically (a SIGKILL at any moment leaves a loadable checkpoint), and on
resume the log is cut back to the checkpoint's step, so a run killed at any point and restarted with the same
command ends with the same weights, optimizer state and step count as an uninterrupted run, and logs every step
once. Save often enough (``ckpt_interval``) for the work you are willing to redo after a kill.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..hub import sha256_of
from ..sharding import agree, agree_on, every_rank
from .distributed import DistContext, ResumableDistributedSampler
from .optim import ExpMomentumEMA, WarmupCosine, param_groups
from .state import checkpoint_exists, load_training_state, remove_checkpoint, restore_rng, save_training_state

__all__ = ["RUN_MARKER", "LoopConfig", "LoopResult", "autocast_dtype", "check_resumed_settings",
           "check_training_folder", "claim_training_folder", "run_loop", "state_digest"]


@dataclass(frozen=True)
class LoopConfig:
    """Loop settings.

    Attributes:
        out_dir: output folder (checkpoints, log).
        name: checkpoint prefix (``<name>_last``).
        epochs: training epochs.
        batch_size: images per process and iteration.
        lr: base learning rate (after warm-up).
        weight_decay: AdamW weight decay of >= 2-dim weights.
        betas: AdamW betas.
        warmup_iters: linear warm-up iterations (0: none).
        warmup_ratio: warm-up start factor.
        cosine_start_epoch: cosine annealing start (None: half-way; >= epochs: constant).
        min_lr_ratio: final learning-rate factor.
        ema: keep an :class:`ExpMomentumEMA`.
        ema_momentum: EMA momentum.
        ema_gamma: EMA warm-up constant.
        amp: ``"auto"`` (bf16 if supported, else fp16, on CUDA; off on CPU), ``"none"``, ``"fp16"``, ``"bf16"``
            (on a CPU only where it has bf16 kernels; see :func:`autocast_dtype`).
        grad_clip: max gradient norm (None: no clipping).
        num_workers: DataLoader workers per process.
        seed: base seed (sampler order, augmentation, model init by the caller).
        log_interval: iterations between log lines.
        ckpt_interval: iterations between checkpoints (0: only at epoch ends).
        max_iters: stop after this global step (None: run all epochs). The run can be resumed later.
        resume: continue from ``<name>_last`` when it exists.
        allow_changes: resume even when the run's settings differ from the checkpoint's (see
            :func:`config_changes`); without it such a resume raises ``ValueError`` listing the changes.
        eval_interval: iterations between calls of ``run_loop``'s ``evaluate`` hook (0: only at the end).
        time_limit_s: stop (resumably, like ``max_iters``) once this much wall time was spent training in this
            call, evaluations excluded (None: no limit). The schedule still follows ``epochs``.
    """

    out_dir: str
    name: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 0
    warmup_ratio: float = 1e-5
    cosine_start_epoch: int | None = None
    min_lr_ratio: float = 0.05
    ema: bool = False
    ema_momentum: float = 2e-4
    ema_gamma: float = 2000.0
    amp: str = "auto"
    grad_clip: float | None = None
    num_workers: int = 0
    seed: int = 0
    log_interval: int = 10
    ckpt_interval: int = 0
    max_iters: int | None = None
    resume: bool = True
    allow_changes: bool = False
    eval_interval: int = 0
    time_limit_s: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} / {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.amp not in ("auto", "none", "fp16", "bf16"):
            raise ValueError(f"amp must be auto, none, fp16 or bf16, got {self.amp!r}")


@dataclass
class LoopResult:
    """What a loop call did: final global step, whether all epochs finished, the last logged values and the
    EMA (or None)."""

    global_step: int
    finished: bool
    last_log: dict[str, float]
    ema: ExpMomentumEMA | None


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full fp32).

    On a CPU, ``auto`` and ``none`` train in fp32 (the reference), ``bf16`` autocasts to bf16 where the CPU has bf16
    kernels (AVX-512; fast with AVX512-BF16 or AMX; :func:`cartoonseg.device.capabilities`) and is refused elsewhere,
    as ``fp16`` always is: ``ValueError`` naming the CPU, instead of training silently in fp32.
    """
    if amp == "none":
        return None
    if device.type == "cpu":
        if amp == "auto":
            return None
        from ..device import capabilities

        caps = capabilities(device)
        if amp == "bf16" and "bf16" in caps.supported:
            return torch.bfloat16
        raise ValueError(f"--amp {amp} is not supported for training on this {caps.description} (CPU training runs "
                         "fp32, or bf16 on a CPU with bf16 kernels: AVX-512); use --amp none or auto")
    if device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def state_digest(state: dict[str, Tensor]) -> str:
    """SHA-256 over a state dict's keys and tensor bytes (sorted keys): equal digests = identical weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous().reshape(-1)
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def _log(ctx: DistContext, out_dir: Path, record: dict[str, Any]) -> None:
    if not ctx.is_main:
        return
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    with (out_dir / "log.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _trim_log(ctx: DistContext, out_dir: Path, global_step: int, name: str) -> None:
    """On resume: drop this loop's (``name``) log lines of steps after the checkpoint (they are trained again) and a
    torn last line, so a killed-and-resumed run logs every step exactly once; other loops sharing the log (the
    refiner's GT-encoder phase) keep theirs. Written to a temporary file and renamed."""
    path = out_dir / "log.jsonl"
    if not ctx.is_main or not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # torn by a kill mid-write
        if isinstance(record, dict) and (record.get("name") != name or int(record.get("step", 0)) <= global_step):
            keep.append(line)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, path)


def discard_loop(ctx: DistContext, out_dir: Path, name: str) -> None:
    """Start the loop ``name`` over in ``out_dir``: its checkpoint and its log lines go (a multi-phase run started
    over with ``resume=False`` must not resume a later phase from the earlier run)."""
    def discard() -> None:
        check_training_folder(out_dir)  # nothing is deleted from a folder that is not a training run of ours
        remove_checkpoint(out_dir / f"{name}_last")
        _trim_log(ctx, out_dir, 0, name)

    agree_on(discard, ctx)  # rank 0 deletes; its error ends every rank (none waits at a barrier for it)


def _broadcast_state(ctx: DistContext, tensors: list[Tensor]) -> None:
    """Give every rank rank 0's values (BatchNorm statistics drift apart: each rank normalises its own batch)."""
    if ctx.distributed:
        for t in tensors:
            dist.broadcast(t, src=0)


def _mean_across(ctx: DistContext, values: dict[str, float], device: torch.device) -> dict[str, float]:
    if not ctx.distributed:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= ctx.world_size
    return dict(zip(keys, t.tolist()))


class _LoadError:
    """A bad-input error (``ValueError``, ``TypeError``, ``OSError``: an unreadable image, a corrupt annotation)
    raised while a DataLoader worker loaded a sample, carried to the training process as a value: torch re-raises
    worker errors with the worker's whole traceback in the message, which a command would print as its
    ``error:`` line."""

    def __init__(self, exc: BaseException) -> None:
        self.kind = type(exc)
        self.message = str(exc)

    def reraise(self) -> None:
        try:
            err = self.kind(self.message)
        except Exception:  # an exception class with another constructor
            err = ValueError(self.message)
        raise err


class _CarryLoadErrors(Dataset):
    """``dataset`` whose bad-input errors come back as :class:`_LoadError` values (see there)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except (ValueError, TypeError, OSError) as exc:
            return _LoadError(exc)


def _carry_collate(collate: Callable[[list], Any]) -> Callable[[list], Any]:
    def carry(items: list) -> Any:
        for item in items:
            if isinstance(item, _LoadError):
                return item
        try:
            return collate(items)
        except (ValueError, TypeError, OSError) as exc:
            return _LoadError(exc)

    return carry


LossFn = Callable[[nn.Module, nn.Module, Any, torch.device], dict[str, Tensor]]
EvalFn = Callable[[nn.Module, "ExpMomentumEMA | None"], dict[str, float]]


def _check_same_checkpoint(prefix: Path, step: int, digest: str, ctx: DistContext) -> None:
    """Under ``torchrun``: raise on every rank (``rank N: ...``, :func:`every_rank`) when the checkpoint a rank
    resumed from (its node's copy of ``prefix``: global ``step`` and the sha256 ``digest`` of its JSON) is not rank
    0's. A node holding an older copy (or one of another run) resumed from another step with other optimizer
    state: the ranks then ran different numbers of steps and their collectives crossed (a hang until the group's
    time-out, or a run that diverged without a word). Rank 0's choice is the run's; the others must hold it."""
    if not ctx.distributed:
        return
    first_step, first_digest = agree((step, digest))

    def check() -> None:
        if (step, digest) != (first_step, first_digest):
            raise ValueError(
                f"training checkpoint {prefix} is step {step} (JSON sha256 {digest[:12]}...) but rank 0's is step "
                f"{first_step} (JSON sha256 {first_digest[:12]}...): every process must resume from the same "
                f"checkpoint; copy rank 0's {prefix.name}.safetensors and {prefix.name}.json to every node (or pass "
                f"--no-resume to start over)")

    every_rank(check, ctx)


#: Settings a resumed run may change freely: where and how it runs, not what it trains.
RESUMABLE_CHANGES = frozenset({"out_dir", "resume", "allow_changes", "max_iters", "log_interval", "ckpt_interval",
                               "num_workers", "device", "eval_interval", "time_limit_s", "check_images"})


def config_changes(saved: Any, current: Any, path: str = "") -> list[str]:
    """``"name: saved -> current"`` for every setting that differs between a checkpoint's config record and the
    current one, ignoring :data:`RESUMABLE_CHANGES` (nested dicts are compared key by key)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(current), key=str):
            if key in RESUMABLE_CHANGES:
                continue
            name = f"{path}.{key}" if path else str(key)
            if key not in saved or key not in current:
                out.append(f"{name}: {saved.get(key, '(absent)')!r} -> {current.get(key, '(absent)')!r}")
            else:
                out.extend(config_changes(saved[key], current[key], name))
        return out
    norm = (lambda v: json.loads(json.dumps(v, default=str)))  # tuples vs lists, as stored in the JSON
    return [] if norm(saved) == norm(current) else [f"{path}: {saved!r} -> {current!r}"]


def _config_record(cfg: LoopConfig, run_config: dict[str, Any] | None, world_size: int) -> dict[str, Any]:
    # the process count is part of what is trained: it multiplies the batch and splits the samples differently
    return {"loop": asdict(cfg), "run": run_config or {}, "world_size": world_size}


def _refuse_changes(prefix: Path, loaded: dict[str, Any], record: dict[str, Any], allow: bool) -> None:
    changes = config_changes(loaded.get("config") or {}, record)
    if changes and not allow:
        raise ValueError(
            f"{prefix}.json was trained with other settings; resuming would silently mix them. Changed: "
            + "; ".join(changes[:12]) + (" ..." if len(changes) > 12 else "")
            + ". Rerun with the original settings, use a new --out, pass --no-resume to start over there, or "
              "--allow-changes to continue anyway")


def check_resumed_settings(cfg: LoopConfig, run_config: dict[str, Any] | None, world_size: int) -> None:
    """The settings check :func:`run_loop` makes when it resumes, for a finished loop whose result is reused
    without running it again (the refiner's GT encoder): ``ValueError`` listing the changed settings unless
    ``cfg.allow_changes``; nothing when the loop has no checkpoint in ``cfg.out_dir``."""
    prefix = Path(cfg.out_dir) / f"{cfg.name}_last"
    if cfg.resume and checkpoint_exists(prefix):
        _refuse_changes(prefix, load_training_state(prefix), _config_record(cfg, run_config, world_size),
                        cfg.allow_changes)


#: the file that marks a folder as a cartoonseg training run (written when a run first uses the folder)
RUN_MARKER = ".cartoonseg-training-run.json"


def _is_our_checkpoint(path: Path) -> bool:
    """Whether ``path`` is the JSON half of a checkpoint that :func:`save_training_state` wrote."""
    try:
        if path.stat().st_size > 64 << 20:
            return False
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("format") == "cartoonseg-train-state" and "step" in meta


def _is_training_run(out_dir: Path, entries: list[str]) -> bool:
    return RUN_MARKER in entries or any(n.endswith("_last.json") and _is_our_checkpoint(out_dir / n) for n in entries)


def check_training_folder(out_dir: str | os.PathLike, *, exports: tuple[str, ...] = (),
                          inputs: tuple[str | os.PathLike | None, ...] = ()) -> None:
    """The output policy for training runs, checked before anything is written or deleted: ``out_dir`` must be new,
    empty, or a training run of ours (it holds the marker :data:`RUN_MARKER` or a ``*_last.json`` checkpoint that
    :func:`save_training_state` wrote; a mere ``log.jsonl`` does not count), so checkpoints, logs and exports never
    land among other files and no user's file is rewritten; and none of the ``exports`` (file names in ``out_dir``)
    may be one of the run's ``inputs`` (``--init``, ``--gt-encoder``, the data). Raises ``ValueError``."""
    from ..outputs import check_not_input

    out_dir = Path(out_dir)
    given = [p for p in inputs if p]
    for name in exports:
        check_not_input(out_dir / name, given)
    if not os.path.lexists(out_dir):
        return
    if not out_dir.is_dir():
        raise ValueError(f"training output {out_dir} exists and is not a folder")
    entries = sorted(p.name for p in out_dir.iterdir())
    if entries and not _is_training_run(out_dir, entries):
        raise ValueError(f"training output folder {out_dir} holds files that are not a cartoonseg training run "
                         f"({', '.join(entries[:4])}{' ...' if len(entries) > 4 else ''}); use a new or empty --out")


def claim_training_folder(out_dir: str | os.PathLike) -> None:
    """:func:`check_training_folder`, then create ``out_dir`` and mark it as a training run (rank 0 only)."""
    from ..outputs import atomic_path

    out_dir = Path(out_dir)
    check_training_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / RUN_MARKER
    if not marker.is_file():
        note = "this folder holds a cartoonseg training run (checkpoints, log.jsonl, exports); a rerun resumes or " \
               "replaces them"
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps({"cartoonseg_training_run": 1, "note": note}) + "\n", encoding="utf-8")


def run_loop(
    ctx: DistContext,
    model: nn.Module,
    dataset: Dataset,
    collate: Callable[[list], Any],
    loss_fn: LossFn,
    cfg: LoopConfig,
    *,
    run_config: dict[str, Any] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    evaluate: EvalFn | None = None,
) -> LoopResult:
    """Train ``model`` (already on ``ctx.device`` and in train mode).

    Args:
        ctx: the distributed context from :func:`cartoonseg.training.distributed.setup`.
        model: the model; wrapped in DDP here when ``ctx.distributed``.
        dataset: a map-style dataset; its ``set_epoch`` (if any) is the caller's business via ``on_epoch_start``.
        collate: the DataLoader collate function.
        loss_fn: ``(wrapped_model, model, batch, device) -> {"loss": scalar, other scalars...}``; the forward
            must go through ``wrapped_model`` (DDP hooks).
        cfg: :class:`LoopConfig`.
        run_config: JSON-able description of the whole run, stored in every checkpoint.
        on_epoch_start: called with the epoch index before its first batch (also on resume).
        evaluate: ``(model, ema) -> {metric: value}``, called on rank 0 every ``cfg.eval_interval`` iterations and
            after the last one, with the model in eval mode; each result is logged as an ``"event": "eval"`` line
            with the step, ``train_s`` (wall time spent training so far, evaluations excluded) and ``eval_s``.
    """
    out_dir = Path(cfg.out_dir)
    # rank 0 alone writes (folder, checkpoints, log, evaluation): each such step goes through agree_on, so when it
    # fails (full disk, unwritable folder) every rank stops at once with rank 0's error instead of waiting at a
    # barrier for a rank 0 that is gone (until the launcher kills it, or the process group's time-out)
    agree_on(lambda: claim_training_folder(out_dir), ctx)
    device = ctx.device
    amp_dtype = autocast_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    ema = ExpMomentumEMA(model, cfg.ema_momentum, cfg.ema_gamma) if cfg.ema else None
    sampler = ResumableDistributedSampler(len(dataset), ctx.world_size, ctx.rank, shuffle=True, seed=cfg.seed)
    iters_per_epoch = sampler.per_rank // cfg.batch_size
    if iters_per_epoch < 1:
        raise ValueError(
            f"dataset of {len(dataset)} samples gives no full batch of {cfg.batch_size} per process "
            f"({ctx.world_size} processes); lower --batch-size"
        )
    schedule = WarmupCosine(
        iters_per_epoch, cfg.epochs, cfg.warmup_iters, cfg.warmup_ratio, cfg.cosine_start_epoch, cfg.min_lr_ratio
    )
    prefix = out_dir / f"{cfg.name}_last"
    epoch, it_in_epoch, global_step = 0, 0, 0
    config_record = _config_record(cfg, run_config, ctx.world_size)
    # whether to resume is rank 0's answer (every rank resumes or none: a rank starting over while the others resume
    # would train other steps); then every rank reads the checkpoint itself, and a copy missing or damaged on one
    # rank's node ends every rank at once with that rank's error (every_rank) instead of leaving the others waiting
    resuming = agree_on(lambda: cfg.resume and checkpoint_exists(prefix), ctx)
    if not resuming:
        agree_on(lambda: _trim_log(ctx, out_dir, 0, cfg.name), ctx)  # a fresh start: this loop's old lines go
    if resuming:

        def load() -> dict[str, Any]:
            loaded = load_training_state(prefix, map_location=device)
            _refuse_changes(prefix, loaded, config_record, cfg.allow_changes)
            model.load_state_dict({k: v.to(device) for k, v in loaded["model"].items()})
            optimizer.load_state_dict(loaded["optimizer"])
            if ema is not None and loaded["ema"] is not None:
                ema.load_state_dict({k: v.to(device) for k, v in loaded["ema"].items()},
                                    loaded["progress"]["ema_steps"])
            if loaded["scaler"] is not None and scaler.is_enabled():
                scaler.load_state_dict(loaded["scaler"])
            return loaded

        loaded, digest = every_rank(lambda: (load(), sha256_of(prefix.with_suffix(".json"))), ctx)
        _check_same_checkpoint(prefix, int(loaded["progress"]["global_step"]), digest, ctx)
        restore_rng(loaded)
        p = loaded["progress"]
        epoch, it_in_epoch, global_step = int(p["epoch"]), int(p["iter"]), int(p["global_step"])

        def note_resume() -> None:
            _trim_log(ctx, out_dir, global_step, cfg.name)
            _log(ctx, out_dir, {"event": "resume", "name": cfg.name, "epoch": epoch, "iter": it_in_epoch,
                                "step": global_step})

        agree_on(note_resume, ctx)
    wrapped: nn.Module = model
    if ctx.distributed:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def save(ep: int, it: int) -> None:
        if it >= iters_per_epoch:
            ep, it = ep + 1, 0

        def write() -> None:
            save_training_state(
                prefix,
                model_state=model.state_dict(),
                optimizer=optimizer,
                progress={
                    "epoch": ep,
                    "iter": it,
                    "global_step": global_step,
                    "ema_steps": ema.steps if ema else 0,
                    "iters_per_epoch": iters_per_epoch,
                },
                config=config_record,
                ema_state=ema.state_dict() if ema else None,
                scaler=scaler,
            )

        agree_on(write, ctx)

    def sync_end() -> None:
        _broadcast_state(ctx, list(model.buffers()))
        if ema is not None:
            _broadcast_state(ctx, [v for v in ema.state.values()])

    last_log: dict[str, float] = {}
    t0 = time.time()
    cpu0 = time.process_time()
    eval_time = eval_cpu = 0.0
    last_eval_step = -1

    def run_eval() -> None:
        nonlocal last_eval_step
        if evaluate is None or last_eval_step == global_step:
            return
        last_eval_step = global_step

        def rank0_eval() -> None:
            nonlocal eval_time, eval_cpu
            start, start_cpu = time.time(), time.process_time()
            model.eval()
            with torch.no_grad():
                metrics = evaluate(model, ema)
            model.train()
            spent = time.time() - start
            record = {"event": "eval", "name": cfg.name, "epoch": epoch, "step": global_step}
            # train_cpu_s: CPU time of this process's threads (data workers excluded), the cost on an idle machine
            record.update(train_s=round(start - t0 - eval_time, 2), eval_s=round(spent, 2),
                          train_cpu_s=round(start_cpu - cpu0 - eval_cpu, 2))
            record.update({k: round(float(v), 6) for k, v in metrics.items()})
            _log(ctx, out_dir, record)
            eval_time += spent
            eval_cpu += time.process_time() - start_cpu

        agree_on(rank0_eval, ctx)  # an evaluator's error ends every rank, not only rank 0
    if cfg.max_iters is not None and global_step >= cfg.max_iters and epoch < cfg.epochs:
        sync_end()  # resumed at the step limit (the same command again): nothing more to train
        return LoopResult(global_step, False, last_log, ema)
    while epoch < cfg.epochs:
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        sampler.set_epoch(epoch, start=it_in_epoch * cfg.batch_size)
        workers = cfg.num_workers > 0  # a worker's error comes back as one line (see _LoadError)
        loader = DataLoader(
            _CarryLoadErrors(dataset) if workers else dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            collate_fn=_carry_collate(collate) if workers else collate,
            num_workers=cfg.num_workers,
            drop_last=True,
            pin_memory=device.type == "cuda",
        )
        model.train()
        for batch in loader:
            if isinstance(batch, _LoadError):
                batch.reraise()
            lr = cfg.lr * schedule(global_step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ctx_amp = (
                torch.autocast(device_type=device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else contextlib.nullcontext()
            )
            with ctx_amp:
                losses = loss_fn(wrapped, model, batch, device)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss {float(loss)} at step {global_step} (epoch {epoch}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            global_step += 1
            it_in_epoch += 1
            if global_step % cfg.log_interval == 0 or it_in_epoch == iters_per_epoch:
                values = {k: float(v.detach()) for k, v in losses.items() if isinstance(v, Tensor) and v.numel() == 1}
                values = _mean_across(ctx, values, device)
                last_log = dict(values, lr=lr)
                record = {
                    "name": cfg.name,
                    "epoch": epoch,
                    "iter": it_in_epoch,
                    "step": global_step,
                    "lr": lr,
                    "time_s": round(time.time() - t0 - eval_time, 2),
                    **{k: round(v, 6) for k, v in values.items()},
                }
                agree_on(lambda: _log(ctx, out_dir, record), ctx)  # a log line rank 0 cannot write ends every rank
            if cfg.ckpt_interval and global_step % cfg.ckpt_interval == 0:
                save(epoch, it_in_epoch)
            stop = cfg.max_iters is not None and global_step >= cfg.max_iters
            if cfg.time_limit_s is not None:
                spent = torch.tensor([time.time() - t0 - eval_time], dtype=torch.float64, device=device)
                if ctx.distributed:  # every rank stops at the same step
                    dist.broadcast(spent, src=0)
                stop = stop or float(spent) >= cfg.time_limit_s
            if epoch == cfg.epochs - 1 and it_in_epoch >= iters_per_epoch:
                stop = False  # the last step of the last epoch: the run finishes (and exports) normally
            if cfg.eval_interval and global_step % cfg.eval_interval == 0 and not stop:
                run_eval()
            if stop:
                save(epoch, it_in_epoch)
                sync_end()
                run_eval()
                return LoopResult(global_step, False, last_log, ema)
        epoch += 1
        it_in_epoch = 0
        save(epoch, 0)
    sync_end()
    run_eval()
    return LoopResult(global_step, True, last_log, ema)
