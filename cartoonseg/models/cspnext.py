"""CSPNeXt backbone and CSPNeXt-PAFPN neck of RTMDet (Lyu et al. 2022), P5 architecture.

Module names follow mmdet 3.3 (``stem``, ``stage1..4``; ``reduce_layers``, ``top_down_blocks``,
``downsamples``, ``bottom_up_blocks``, ``out_convs``) so that released checkpoints load strictly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import DetectorConfig
from .layers import ConvBNAct, CSPLayer, SPPBottleneck

__all__ = ["CSPNeXt", "CSPNeXtPAFPN"]

# (in, out, blocks, add_identity, use_spp) per stage, before the width/depth multipliers.
_P5_ARCH = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False), (512, 1024, 3, False, True))


class CSPNeXt(nn.Module):
    """Backbone returning the stride-8/16/32 feature maps (stage2, stage3, stage4 outputs)."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        widen, deepen, eps = config.widen_factor, config.deepen_factor, config.bn_eps
        stem = int(_P5_ARCH[0][0] * widen)
        self.stem = nn.Sequential(
            ConvBNAct(3, stem // 2, 3, stride=2, bn_eps=eps),
            ConvBNAct(stem // 2, stem // 2, 3, bn_eps=eps),
            ConvBNAct(stem // 2, stem, 3, bn_eps=eps),
        )
        self.out_channels: list[int] = []
        for index, (cin, cout, blocks, identity, spp) in enumerate(_P5_ARCH, start=1):
            cin, cout = int(cin * widen), int(cout * widen)
            layers: list[nn.Module] = [ConvBNAct(cin, cout, 3, stride=2, bn_eps=eps)]
            if spp:
                layers.append(SPPBottleneck(cout, cout, bn_eps=eps))
            layers.append(
                CSPLayer(
                    cout,
                    cout,
                    num_blocks=max(round(blocks * deepen), 1),
                    add_identity=identity,
                    channel_attention=config.channel_attention,
                    expand_ratio=config.expand_ratio,
                    bn_eps=eps,
                )
            )
            self.add_module(f"stage{index}", nn.Sequential(*layers))
            self.out_channels.append(cout)
        self.out_channels = self.out_channels[1:]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x`` [B,3,H,W] normalised BGR -> [C3, C4, C5] at strides 8, 16, 32."""
        x = self.stem(x)
        x = self.stage1(x)
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return [c3, c4, c5]


class CSPNeXtPAFPN(nn.Module):
    """Path-aggregation neck: top-down with reduced lateral maps, then bottom-up, then 3x3 output convs."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        cin = config.neck_in_channels
        eps, blocks, ratio = config.bn_eps, config.neck_num_csp_blocks, config.expand_ratio
        n = len(cin)
        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for idx in range(n - 1, 0, -1):
            self.reduce_layers.append(ConvBNAct(cin[idx], cin[idx - 1], 1, bn_eps=eps))
            self.top_down_blocks.append(
                CSPLayer(cin[idx - 1] * 2, cin[idx - 1], blocks, False, False, expand_ratio=ratio, bn_eps=eps)
            )
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for idx in range(n - 1):
            self.downsamples.append(ConvBNAct(cin[idx], cin[idx], 3, stride=2, bn_eps=eps))
            self.bottom_up_blocks.append(
                CSPLayer(cin[idx] * 2, cin[idx + 1], blocks, False, False, expand_ratio=ratio, bn_eps=eps)
            )
        self.out_convs = nn.ModuleList(ConvBNAct(c, config.neck_out_channels, 3, bn_eps=eps) for c in cin)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        n = len(feats)
        inner = [feats[-1]]
        for idx in range(n - 1, 0, -1):
            high = self.reduce_layers[n - 1 - idx](inner[0])
            inner[0] = high  # the bottom-up path uses the reduced maps
            up = torch.nn.functional.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.top_down_blocks[n - 1 - idx](torch.cat([up, feats[idx - 1]], dim=1)))
        outs = [inner[0]]
        for idx in range(n - 1):
            down = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat([down, inner[idx + 1]], dim=1)))
        return [conv(o) for conv, o in zip(self.out_convs, outs)]
