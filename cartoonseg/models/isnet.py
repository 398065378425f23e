"""IS-Net (Qin et al. 2022, "Highly Accurate Dichotomous Image Segmentation") as used by CartoonSegmentation's
mask refiner (arXiv 2312.01943 §4.2): ``ISNetDIS`` with a 4-channel input (image + coarse instance mask), and the
ground-truth encoder ``ISNetGTEncoder`` used for intermediate supervision during training.

Module and parameter names follow the released ``refine_last.ckpt`` (``conv_in``, ``stage1..6``,
``stage5d..1d``, ``side1..6``; inside the RSU blocks ``rebnconv*`` with ``conv_s1`` / ``bn_s1``), so that file
loads strictly. ``width`` scales every channel count (1.0 = released model) for small test models.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import RefinerConfig
from .weights import CheckpointError, strip_prefix, tensor_entries

__all__ = ["ISNetDIS", "ISNetGTEncoder", "RSU", "RSU4F", "filter_isnet", "infer_refiner_config"]


def _upsample_like(src: Tensor, target: Tensor) -> Tensor:
    return F.interpolate(src, size=target.shape[2:], mode="bilinear", align_corners=False)


def _pool(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class REBNCONV(nn.Module):
    """3x3 conv (with bias, dilation ``dirate``) + BatchNorm + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dirate: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block of height ``height`` (RSU-7/6/5/4): ``height - 2`` max-pools, a dilated bottom conv."""

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        if height < 3:
            raise ValueError(f"RSU height must be >= 3, got {height}")
        self.height = height
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch)
        for i in range(2, height):
            self.add_module(f"rebnconv{i}", REBNCONV(mid_ch, mid_ch))
        self.add_module(f"rebnconv{height}", REBNCONV(mid_ch, mid_ch, dirate=2))
        for i in range(height - 1, 1, -1):
            self.add_module(f"rebnconv{i}d", REBNCONV(mid_ch * 2, mid_ch))
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        hxin = self.rebnconvin(x)
        skips = [self.rebnconv1(hxin)]
        for i in range(2, self.height):
            skips.append(getattr(self, f"rebnconv{i}")(_pool(skips[-1])))
        hx = getattr(self, f"rebnconv{self.height}")(skips[-1])
        for i in range(self.height - 1, 0, -1):
            skip = skips[i - 1]
            if i < self.height - 1:
                hx = _upsample_like(hx, skip)
            hx = getattr(self, f"rebnconv{i}d")(torch.cat([hx, skip], dim=1))
        return hx + hxin


class RSU4F(nn.Module):
    """Residual U-block without pooling: dilations 1, 2, 4, 8."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch)
        self.rebnconv2 = REBNCONV(mid_ch, mid_ch, dirate=2)
        self.rebnconv3 = REBNCONV(mid_ch, mid_ch, dirate=4)
        self.rebnconv4 = REBNCONV(mid_ch, mid_ch, dirate=8)
        self.rebnconv3d = REBNCONV(mid_ch * 2, mid_ch, dirate=4)
        self.rebnconv2d = REBNCONV(mid_ch * 2, mid_ch, dirate=2)
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        hxin = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat([hx4, hx3], dim=1))
        hx2d = self.rebnconv2d(torch.cat([hx3d, hx2], dim=1))
        hx1d = self.rebnconv1d(torch.cat([hx2d, hx1], dim=1))
        return hx1d + hxin


def _c(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class ISNetDIS(nn.Module):
    """IS-Net segmentation network.

    ``forward(x)`` takes ``[B, in_ch, H, W]`` and returns ``(side_logits, features)``: six logits ``[B,1,H,W]``
    (d1 first, the final output) at the input size, and the decoder features ``[hx1d, hx2d, hx3d, hx4d, hx5d,
    hx6]`` that the GT encoder supervises during training. For the released refiner the input is the **BGR**
    image / 255 plus the coarse instance mask (0..1) as channel 3.
    """

    def __init__(self, config: RefinerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or RefinerConfig()
        w = config.width

        def c(ch: int) -> int:
            return _c(ch, w)

        self.conv_in = nn.Conv2d(config.in_ch, c(64), 3, stride=2, padding=1)
        self.stage1 = RSU(7, c(64), c(32), c(64))
        self.stage2 = RSU(6, c(64), c(32), c(128))
        self.stage3 = RSU(5, c(128), c(64), c(256))
        self.stage4 = RSU(4, c(256), c(128), c(512))
        self.stage5 = RSU4F(c(512), c(256), c(512))
        self.stage6 = RSU4F(c(512), c(256), c(512))
        self.stage5d = RSU4F(c(1024), c(256), c(512))
        self.stage4d = RSU(4, c(1024), c(128), c(256))
        self.stage3d = RSU(5, c(512), c(64), c(128))
        self.stage2d = RSU(6, c(256), c(32), c(64))
        self.stage1d = RSU(7, c(128), c(16), c(64))
        for i, ch in enumerate((64, 64, 128, 256, 512, 512), start=1):
            self.add_module(f"side{i}", nn.Conv2d(c(ch), config.out_ch, 3, padding=1))

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.config.in_ch:
            raise ValueError(f"ISNetDIS expects [B,{self.config.in_ch},H,W], got shape {tuple(x.shape)}")

    def _decoder_features(self, x: Tensor) -> list[Tensor]:
        # The reference also computes a max-pool of conv_in's output that it never uses; stage1 runs at stride 2.
        hxin = self.conv_in(x)
        hx1 = self.stage1(hxin)
        hx2 = self.stage2(_pool(hx1))
        hx3 = self.stage3(_pool(hx2))
        hx4 = self.stage4(_pool(hx3))
        hx5 = self.stage5(_pool(hx4))
        hx6 = self.stage6(_pool(hx5))
        hx5d = self.stage5d(torch.cat([_upsample_like(hx6, hx5), hx5], dim=1))
        hx4d = self.stage4d(torch.cat([_upsample_like(hx5d, hx4), hx4], dim=1))
        hx3d = self.stage3d(torch.cat([_upsample_like(hx4d, hx3), hx3], dim=1))
        hx2d = self.stage2d(torch.cat([_upsample_like(hx3d, hx2), hx2], dim=1))
        hx1d = self.stage1d(torch.cat([_upsample_like(hx2d, hx1), hx1], dim=1))
        return [hx1d, hx2d, hx3d, hx4d, hx5d, hx6]

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        self._check(x)
        features = self._decoder_features(x)
        sides = [_upsample_like(getattr(self, f"side{i}")(f), x) for i, f in enumerate(features, start=1)]
        return sides, features

    def predict_logits(self, x: Tensor) -> Tensor:
        """Only the final logit map d1 ``[B,1,H,W]`` (skips the five auxiliary side heads)."""
        self._check(x)
        return _upsample_like(self.side1(self._decoder_features(x)[0]), x)


class _ConvBNReLU(nn.Module):
    """``myrebnconv`` of the reference: conv (with bias) + BN + ReLU, submodules ``conv`` / ``bn`` / ``rl``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(out_ch)
        self.rl = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.rl(self.bn(self.conv(x)))


class ISNetGTEncoder(nn.Module):
    """Ground-truth mask encoder (training aid only): its features at each of the six scales have the same
    channels and strides as ISNetDIS's ``[hx1d .. hx5d, hx6]``, so they can supervise the refiner (MSE)."""

    def __init__(self, in_ch: int = 1, out_ch: int = 1, width: float = 1.0) -> None:
        super().__init__()
        self.width = width  # the refiner width whose features it matches

        def c(ch: int) -> int:
            return _c(ch, width)

        self.conv_in = _ConvBNReLU(in_ch, c(16), stride=2)
        self.stage1 = RSU(7, c(16), c(16), c(64))
        self.stage2 = RSU(6, c(64), c(16), c(64))
        self.stage3 = RSU(5, c(64), c(32), c(128))
        self.stage4 = RSU(4, c(128), c(32), c(256))
        self.stage5 = RSU4F(c(256), c(64), c(512))
        self.stage6 = RSU4F(c(512), c(64), c(512))
        for i, ch in enumerate((64, 64, 128, 256, 512, 512), start=1):
            self.add_module(f"side{i}", nn.Conv2d(c(ch), out_ch, 3, padding=1))

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``x`` [B,1,H,W] ground-truth mask -> (six side logits at input size, six encoder features)."""
        hx1 = self.stage1(self.conv_in(x))
        hx2 = self.stage2(_pool(hx1))
        hx3 = self.stage3(_pool(hx2))
        hx4 = self.stage4(_pool(hx3))
        hx5 = self.stage5(_pool(hx4))
        hx6 = self.stage6(_pool(hx5))
        features = [hx1, hx2, hx3, hx4, hx5, hx6]
        sides = [_upsample_like(getattr(self, f"side{i}")(f), x) for i, f in enumerate(features, start=1)]
        return sides, features


# ---------------------------------------------------------------------------------------------- checkpoints
def filter_isnet(checkpoint: dict[str, Any]) -> dict[str, Tensor]:
    """IS-Net checkpoint -> flat ISNetDIS state dict: takes ``state_dict`` when present (Lightning), strips the
    ``net.`` / ``module.`` prefixes and drops the training-only ``gt_encoder.*`` weights."""
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, dict):
        raise CheckpointError(f"checkpoint['state_dict'] is a {type(sd).__name__}, expected a dict")
    sd = strip_prefix(tensor_entries(sd), "module.")
    if any(k.startswith("net.") for k in sd):
        sd = {k[4:]: v for k, v in sd.items() if k.startswith("net.")}
    return sd


def infer_refiner_config(state_dict: dict[str, Tensor], base: RefinerConfig | None = None) -> RefinerConfig:
    """Size an ISNetDIS from tensor shapes (input channels and width)."""
    try:
        w = state_dict["conv_in.weight"]
        side = state_dict["side1.weight"]
    except KeyError as exc:
        raise CheckpointError(f"not an IS-Net state dict: key {exc.args[0]!r} is missing") from exc
    base = base or RefinerConfig()
    try:  # the config range-checks what the shapes declare (in_ch, width) before any model is built
        return base.replace(in_ch=int(w.shape[1]), width=w.shape[0] / 64, out_ch=int(side.shape[0]))
    except (ValueError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"cannot size an IS-Net from this state dict: {exc}") from exc
