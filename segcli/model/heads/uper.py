"""UPerNet decode head (Xiao et al., ECCV 2018): PPM on the deepest level, FPN top-down, fusion, classifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import ConvModule, conv_upsampled_concat, resize
from .ppm import PyramidPooling


@dataclass(frozen=True)
class UPerHeadConfig:
    in_channels: tuple[int, ...]  # backbone channels at strides 4, 8, 16, 32
    num_classes: int
    channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    align_corners: bool = False


class UPerHead(nn.Module):
    """Features [1/4, 1/8, 1/16, 1/32] → logits [B, num_classes, H/4, W/4]."""

    def __init__(self, cfg: UPerHeadConfig) -> None:
        super().__init__()
        ch, top = cfg.channels, cfg.in_channels[-1]
        self.align_corners = cfg.align_corners
        self.psp_modules = PyramidPooling(top, ch, cfg.pool_scales, cfg.align_corners)
        self.bottleneck = ConvModule(top + len(cfg.pool_scales) * ch, ch, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, ch, 1) for c in cfg.in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(ch, ch, 3, padding=1) for _ in cfg.in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(cfg.in_channels) * ch, ch, 3, padding=1)
        self.classifier = nn.Conv2d(ch, cfg.num_classes, kernel_size=1)
        self.fused = True  # False: the plain concat + conv form (for export: no in-place updates)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        top = features[-1]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        bn = self.bottleneck  # PPM at 1/32: bottleneck(cat[top, up(pooled)]) without upsampling first
        if self.fused:
            laterals.append(bn.activation(bn.batch_norm(self.psp_modules.fuse(top, bn.conv))))
        else:
            laterals.append(bn(torch.cat([top, *self.psp_modules(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: 1/32 → 1/16 → 1/8 → 1/4
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:], self.align_corners)
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        # fpn_bottleneck(cat[1/4, up(1/8), up(1/16), up(1/32)]) without materialising the upsampled maps
        fb, size = self.fpn_bottleneck, tuple(outs[0].shape[-2:])
        if not self.fused:
            cat = torch.cat([outs[0]] + [resize(o, size, self.align_corners) for o in outs[1:]], dim=1)
            return self.classifier(fb(cat))
        fused = conv_upsampled_concat(fb.conv, outs, size, self.align_corners)
        return self.classifier(fb.activation(fb.batch_norm(fused)))  # [B, K, H/4, W/4]
