"""Building blocks shared by the CSPNeXt backbone, the PAFPN neck and the RTMDet-Ins head.

Written from the descriptions in RTMDet (Lyu et al. 2022) and the mmdet 3.3 module layout, so that
state-dict keys match mmdet's names (``conv`` / ``bn`` / ``activate`` of mmcv's ConvModule, ``depthwise_conv``
/ ``pointwise_conv`` of DepthwiseSeparableConvModule, ``main_conv`` / ``short_conv`` / ``final_conv`` /
``blocks`` / ``attention`` of CSPLayer). Activation modules have no parameters, so their names do not matter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBNAct", "DepthwiseSeparableConv", "CSPNeXtBlock", "ChannelAttention", "CSPLayer", "SPPBottleneck"]


class ConvBNAct(nn.Module):
    """Conv2d without bias, BatchNorm, SiLU (mmcv ``ConvModule`` with ``bias='auto'`` and a norm)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bn_eps: float = 1e-5,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.activate = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k ConvBNAct followed by pointwise 1x1 ConvBNAct."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.depthwise_conv = ConvBNAct(in_channels, in_channels, kernel_size, groups=in_channels, bn_eps=bn_eps)
        self.pointwise_conv = ConvBNAct(in_channels, out_channels, 1, bn_eps=bn_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class CSPNeXtBlock(nn.Module):
    """3x3 conv then depthwise-separable 5x5 conv, with an optional identity shortcut."""

    def __init__(self, in_channels: int, out_channels: int, add_identity: bool, bn_eps: float = 1e-5) -> None:
        super().__init__()
        hidden = out_channels  # CSPLayer builds its blocks with expansion 1.0
        self.conv1 = ConvBNAct(in_channels, hidden, 3, bn_eps=bn_eps)
        self.conv2 = DepthwiseSeparableConv(hidden, out_channels, 5, bn_eps=bn_eps)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    """Global average pool, 1x1 conv with bias, hard sigmoid, channel re-weighting (pinned to fp32)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        # The pooled statistic is computed in fp32 even under autocast, as the reference does.
        with torch.autocast(device_type=x.device.type, enabled=False):
            weight = self.act(self.fc(F.adaptive_avg_pool2d(x.float(), 1).to(self.fc.weight.dtype)))
        return x * weight.to(x.dtype)


class CSPLayer(nn.Module):
    """Cross-stage-partial layer: two 1x1 branches, CSPNeXt blocks on the main one, concat [main, short],
    optional channel attention, 1x1 fusion."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        add_identity: bool,
        channel_attention: bool,
        expand_ratio: float = 0.5,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvBNAct(in_channels, mid, 1, bn_eps=bn_eps)
        self.short_conv = ConvBNAct(in_channels, mid, 1, bn_eps=bn_eps)
        self.final_conv = ConvBNAct(2 * mid, out_channels, 1, bn_eps=bn_eps)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, mid, add_identity, bn_eps=bn_eps) for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: Tensor) -> Tensor:
        short = self.short_conv(x)
        main = self.blocks(self.main_conv(x))
        out = torch.cat([main, short], dim=1)
        if self.attention is not None:
            out = self.attention(out)
        return self.final_conv(out)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling with three parallel max-pools (5, 9, 13), not SPPF."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = (5, 9, 13), bn_eps: float = 1e-5
    ) -> None:
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvBNAct(in_channels, mid, 1, bn_eps=bn_eps)
        self.kernel_sizes = tuple(kernel_sizes)
        self.conv2 = ConvBNAct(mid * (len(kernel_sizes) + 1), out_channels, 1, bn_eps=bn_eps)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        pooled = [F.max_pool2d(x, k, stride=1, padding=k // 2) for k in self.kernel_sizes]
        return self.conv2(torch.cat([x, *pooled], dim=1))
