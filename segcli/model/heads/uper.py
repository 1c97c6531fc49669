"""UPerNet decode head (Xiao et al., ECCV 2018): PPM on the deepest level, FPN top-down, fusion, classifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import ConcatConvModule, ConvModule, resize
from .ppm import PyramidPooling


@dataclass(frozen=True)
class UPerHeadConfig:
    in_channels: tuple[int, ...]  # backbone channels at strides 4, 8, 16, 32
    num_classes: int
    channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    align_corners: bool = False
    ppm_upsample_first: bool = False  # the CSAIL UPerNet's PPM order (see PyramidPooling)
    ppm_precise: bool = False  # precise RoI pooling in the PPM (unified perceptual parsing)
    threshold: float | None = None  # a binary head (num_classes 1: one logit): label 1 where sigmoid > this


class UPerHead(nn.Module):
    """Features [1/4, 1/8, 1/16, 1/32] → logits [B, num_classes, H/4, W/4]."""

    def __init__(self, cfg: UPerHeadConfig, classifier: bool = True) -> None:
        super().__init__()
        ch, top, ac = cfg.channels, cfg.in_channels[-1], cfg.align_corners
        self.align_corners = ac
        self.psp_modules = PyramidPooling(top, ch, cfg.pool_scales, cfg.ppm_upsample_first, cfg.ppm_precise)
        self.bottleneck = ConcatConvModule(top + len(cfg.pool_scales) * ch, ch, 3, ac)
        self.lateral_convs = nn.ModuleList(ConvModule(c, ch, 1) for c in cfg.in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(ch, ch, 3, padding=1) for _ in cfg.in_channels[:-1])
        self.fpn_bottleneck = ConcatConvModule(len(cfg.in_channels) * ch, ch, 3, ac)
        if classifier:
            self.classifier = nn.Conv2d(ch, cfg.num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.fpn_bottleneck(self.pyramid(features)))  # fusion of [P2, ↑P3, ↑P4, ↑P5]

    def pyramid(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """[P2, P3, P4, P5] at 1/4 … 1/32; P5 is the PPM's output (no FPN conv on the top level)."""
        top = features[-1]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features[:-1], strict=True)]
        laterals.append(self.bottleneck([top, *self.psp_modules(top)]))  # PPM at 1/32
        for i in range(len(laterals) - 1, 0, -1):  # top-down: 1/32 → 1/16 → 1/8 → 1/4
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:], self.align_corners)
        return [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1], strict=True)] + [laterals[-1]]
