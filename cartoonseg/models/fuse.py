"""Inference-time BatchNorm folding for the detector (RTMDet-Ins, CSPNeXt) and the refiner (IS-Net).

Every conv → BN pair of the pack's building blocks (mmcv ``ConvModule`` = :class:`~.layers.ConvBNAct`, IS-Net
``REBNCONV`` and ``myrebnconv``) is replaced by one conv with bias: with ``s = gamma / sqrt(var + eps)``,
``W' = W * s`` (per output channel) and ``b' = (b - mean) * s + beta``. This is the standard eval-mode identity
(e.g. Jacob et al. 2018, §3.2); the folding is computed in float64 and cast back, so fp32 outputs change only by
rounding (about 1e-6 relative, inside the tolerances of the golden tests ``tests/test_golden_*.py``).

After folding, each block's activation (ReLU in IS-Net, SiLU in CSPNeXt) becomes part of a :class:`FusedConvAct`:
on CPU with oneDNN it runs as a post-op of the convolution (``torch.ops.mkldnn._convolution_pointwise``, the
kernel PyTorch's own Inductor uses for frozen CPU graphs), so the output is written once instead of twice. ReLU
is elementwise, so this is bit-identical; oneDNN's SiLU differs from ``F.silu`` by about one ulp. Elsewhere
(CUDA, no oneDNN) it falls back to ``conv`` then the activation.

The RTMDet-Ins head shares its cls conv weights across levels with one BN per level; folding gives every level its
own conv (the fused model has more parameters and its state dict no longer matches the checkpoint layout, so keep
the original module for training and saving).
"""

from __future__ import annotations

import copy
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .isnet import REBNCONV, _ConvBNReLU
from .layers import ConvBNAct

__all__ = ["FUSABLE", "FusedConvAct", "fold_bn_into_conv", "fuse_conv_bn", "inference_copy", "is_prepared", "prepare_for_inference"]

#: block class -> (conv attribute, BN attribute, activation attribute); the block's forward is act(bn(conv(x))).
FUSABLE: dict[type, tuple[str, str, str]] = {
    ConvBNAct: ("conv", "bn", "activate"),
    REBNCONV: ("conv_s1", "bn_s1", "relu_s1"),
    _ConvBNReLU: ("conv", "bn", "rl"),
}

_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
_ACTS: dict[type, str] = {nn.ReLU: "relu", nn.SiLU: "swish", nn.Identity: "none"}


class FusedConvAct(nn.Module):
    """Inference-only ``act(conv(x))`` with the activation (``"relu"``, ``"swish"`` = SiLU or ``"none"``) fused into
    the convolution as a oneDNN post-op on CPU. Under CPU autocast it computes in the autocast dtype, otherwise in
    the weights' dtype (so a bf16 copy of the weights runs without per-call casts).

    Args:
        conv: the (BN-folded) convolution; kept as the ``conv`` submodule.
        act: ``"relu"``, ``"swish"`` or ``"none"``.
    """

    def __init__(self, conv: nn.Conv2d, act: str) -> None:
        super().__init__()
        if act not in ("relu", "swish", "none"):
            raise ValueError(f"act must be 'relu', 'swish' or 'none', got {act!r}")
        self.conv = conv
        self.act = act

    def _fallback(self, y: Tensor) -> Tensor:
        if self.act == "relu":
            return F.relu(y)
        if self.act == "swish":
            return F.silu(y)
        return y

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        if (_POINTWISE is None or x.device.type != "cpu" or conv.padding_mode != "zeros"
                or isinstance(conv.padding, str) or x.dim() != 4):
            return self._fallback(conv(x))
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else conv.weight.dtype
        if dtype not in (torch.float32, torch.bfloat16):
            return self._fallback(conv(x))
        w = conv.weight if conv.weight.dtype == dtype else conv.weight.to(dtype)
        b = conv.bias if conv.bias is None or conv.bias.dtype == dtype else conv.bias.to(dtype)
        return _POINTWISE(x.to(dtype), w, b, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                          self.act, [], "")

    def extra_repr(self) -> str:
        return f"act={self.act}"


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` (with bias) equal to ``bn(conv(x))`` for a BN in eval mode (running statistics).

    Args:
        conv: the convolution (bias optional); not modified.
        bn: the BatchNorm2d that follows it, with running statistics and ``out_channels`` features.

    Returns:
        The folded convolution, on the conv's device and dtype.
    """
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"expected Conv2d and BatchNorm2d, got {type(conv).__name__} and {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics (track_running_stats=False)")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BN has {bn.num_features} features, the conv {conv.out_channels} output channels")
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=True, padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype,
    )
    w = conv.weight.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(bn.running_var, dtype=torch.float64)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(bn.running_mean, dtype=torch.float64)
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused.weight.copy_((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    fused.bias.copy_(((bias - bn.running_mean.double()) * scale + beta).to(conv.weight.dtype))
    return fused


@torch.no_grad()
def fuse_conv_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every BN of the known conv-BN blocks (:data:`FUSABLE`) into its conv.

    Args:
        model: a detector, refiner or any module containing those blocks.
        inplace: modify ``model`` itself (its state dict changes: BN keys disappear) instead of a deep copy.

    Returns:
        The fused model, in eval mode (folding uses the running statistics, so it is only valid for inference).
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    for module in fused.modules():
        attrs = FUSABLE.get(type(module))
        if attrs is None:
            continue
        conv_attr, bn_attr, act_attr = attrs
        bn = getattr(module, bn_attr)
        if isinstance(bn, nn.Identity):  # already fused
            continue
        act = _ACTS.get(type(getattr(module, act_attr)))
        conv = fold_bn_into_conv(getattr(module, conv_attr), bn)
        if act is not None:  # activation moves into the conv module; the block's own act becomes Identity
            conv = FusedConvAct(conv, act)
            setattr(module, act_attr, nn.Identity())
        setattr(module, conv_attr, conv)
        setattr(module, bn_attr, nn.Identity())
    return fused


def _fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced, moved or modified in place (tensor version counters)."""
    items = []
    for t in list(model.parameters()) + list(model.buffers()):
        items.append((t.data_ptr(), t._version, t.dtype, t.device))
    return tuple(items)


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, tuple, nn.Module]] = weakref.WeakKeyDictionary()


def inference_copy(
    model: nn.Module, fuse: bool = True, channels_last: bool = False, dtype: torch.dtype | None = None
) -> nn.Module:
    """A BN-folded (``fuse``) and/or channels_last eval copy of ``model``, cached per model.

    The cache entry is rebuilt when any parameter/buffer of ``model`` is replaced, moved or changed in place
    (an optimizer step, ``load_state_dict``, ``.to(device)``), so a long-lived Segmenter never runs stale weights.

    Args:
        model: the module to copy (not modified).
        fuse: fold the BatchNorms (:func:`fuse_conv_bn`); otherwise a plain deep copy.
        channels_last: convert the copy's 4-D weights to ``torch.channels_last``.
        dtype: cast the copy's floating-point weights (e.g. ``torch.bfloat16`` for CPU bf16 inference, which
            then skips autocast's per-call weight casts); None keeps the model's dtype.

    Returns:
        The fused copy (costs one extra set of weights in memory).
    """
    key = _fingerprint(model)
    options = (bool(fuse), bool(channels_last), dtype)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key and hit[1] == options:
        return hit[2]
    fused = fuse_conv_bn(model, inplace=False) if fuse else copy.deepcopy(model).eval()
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    if dtype is not None:
        fused = fused.to(dtype)
    _CACHE[model] = (key, options, fused)
    return fused


def is_prepared(model: nn.Module, fuse: bool = True, channels_last: bool = False) -> bool:
    """Whether ``model`` already is what :func:`inference_copy` would build: no foldable BN left (``fuse``) and
    every 4-D weight in channels-last layout (``channels_last``). Such a model runs as it is, without a copy."""
    if fuse:
        for module in model.modules():
            attrs = FUSABLE.get(type(module))
            if attrs is not None and not isinstance(getattr(module, attrs[1]), nn.Identity):
                return False
    if channels_last:
        for p in model.parameters():
            if p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last):
                return False
    return True


@torch.no_grad()
def prepare_for_inference(model: nn.Module, fuse: bool = True, channels_last: bool = True) -> nn.Module:
    """Fold the BNs and/or convert to channels-last **in place**, for a model that will only run inference
    (e.g. one loaded by a ComfyUI node): no second copy of the weights is kept, and later ``.to(device)`` moves
    keep the layout. The model can no longer be saved in the checkpoint layout (BN keys are gone).

    Returns:
        ``model`` itself, in eval mode.
    """
    if fuse:
        fuse_conv_bn(model, inplace=True)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model.eval()
