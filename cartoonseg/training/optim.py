"""Optimisation helpers: AdamW parameter groups, learning-rate schedules, EMA, head initialisation.

* parameter groups follow mmdet's ``paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0,
  bypass_duplicate=True)`` of the RTMDet recipe: no weight decay on normalisation weights/biases and on every
  bias (all 0-/1-dim tensors), shared (aliased) parameters listed once;
* :class:`WarmupCosine`: linear warm-up from ``warmup_ratio`` over ``warmup_iters`` iterations, constant, then
  cosine annealing to ``min_lr_ratio`` over the epochs ``[cosine_start, max_epochs)`` (RTMDet: 1000 iterations
  from 1e-5x, cosine over the second half down to 0.05x), computed per iteration so it is a pure function of
  the step (a resumed run gets exactly the same rates);
* :class:`ExpMomentumEMA`: mmdet's ``ExpMomentumEMA`` (momentum 2e-4, gamma 2000):
  ``m_t = (1 - m) exp(-(1 + t) / gamma) + m``, ``ema = (1 - m_t) ema + m_t param`` on parameters and floating
  buffers (``update_buffers=True``), integer buffers copied;
* :func:`init_rtmdet_head`: the RTMDet head initialisation (normal std 0.01 convs, classification bias at
  prior probability 0.01), used when training without a pretrained checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["ExpMomentumEMA", "WarmupCosine", "init_rtmdet_head", "param_groups"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights (>= 2-dim) and undecayed norms/biases (<= 1-dim)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # named_parameters de-duplicates aliased parameters
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@dataclass(frozen=True)
class WarmupCosine:
    """Learning-rate factor as a function of the global iteration.

    Attributes:
        iters_per_epoch: iterations in one epoch.
        max_epochs: total epochs.
        warmup_iters: linear warm-up length (0 disables it).
        warmup_ratio: factor at iteration 0.
        cosine_start_epoch: epoch where cosine annealing starts (None: ``max_epochs // 2``; ``max_epochs``
            or more: constant learning rate after warm-up).
        min_lr_ratio: factor at the end of the cosine.
    """

    iters_per_epoch: int
    max_epochs: int
    warmup_iters: int = 1000
    warmup_ratio: float = 1e-5
    cosine_start_epoch: int | None = None
    min_lr_ratio: float = 0.05

    def __call__(self, step: int) -> float:
        factor = 1.0
        if self.warmup_iters > 0 and step < self.warmup_iters:
            factor = self.warmup_ratio + (1.0 - self.warmup_ratio) * step / self.warmup_iters
        start_epoch = self.max_epochs // 2 if self.cosine_start_epoch is None else self.cosine_start_epoch
        start = start_epoch * self.iters_per_epoch
        total = self.max_epochs * self.iters_per_epoch
        if step >= start and total > start:
            t = min(1.0, (step - start) / (total - start))
            factor *= self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
        return factor


class ExpMomentumEMA:
    """Exponential moving average of a model's parameters and buffers (see the module docstring).

    Args:
        model: the (unwrapped) model to track.
        momentum: the asymptotic momentum ``m`` (2e-4).
        gamma: warm-up time constant in updates (2000).
    """

    def __init__(self, model: nn.Module, momentum: float = 2e-4, gamma: float = 2000.0) -> None:
        if not 0 < momentum < 1:
            raise ValueError(f"EMA momentum must lie in (0, 1), got {momentum}")
        if gamma <= 0:
            raise ValueError(f"EMA gamma must be > 0, got {gamma}")
        self.momentum = momentum
        self.gamma = gamma
        self.steps = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=False).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        m = (1 - self.momentum) * math.exp(-float(1 + self.steps) / self.gamma) + self.momentum
        for k, v in model.state_dict().items():
            avg = self.state[k]
            if avg.dtype.is_floating_point:
                avg.mul_(1 - m).add_(v.detach().to(avg.dtype), alpha=m)
            else:
                avg.copy_(v)
        self.steps += 1

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, Tensor], steps: int) -> None:
        missing = sorted(set(self.state) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks keys {missing[:5]}{'...' if len(missing) > 5 else ''}")
        for k in self.state:
            self.state[k].copy_(state[k])
        self.steps = int(steps)

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        model.load_state_dict(self.state, strict=True)


@torch.no_grad()
def init_rtmdet_head(model: nn.Module, prior_prob: float = 0.01) -> None:
    """RTMDet head initialisation: head convs ~ N(0, 0.01), zero biases except the classification bias
    ``-log((1 - p) / p)``; BatchNorm weight 1, bias 0. Leaves the backbone and neck as they are."""
    head = model.bbox_head
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    bias = -math.log((1 - prior_prob) / prior_prob)
    for conv in head.rtm_cls:
        nn.init.constant_(conv.bias, bias)
