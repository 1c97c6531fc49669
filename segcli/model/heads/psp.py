"""PSPNet decode head (Zhao et al., CVPR 2017): pyramid pooling on the last (1/8) feature map, a 3×3
bottleneck over the map and its pooled context, classifier. Dropout is a training-time layer: skipped."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import ConcatConvModule
from .ppm import PyramidPooling


@dataclass(frozen=True)
class PSPHeadConfig:
    in_channels: int  # channels of the last backbone level
    num_classes: int
    channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    align_corners: bool = False
    in_index: int = -1
    threshold: float | None = None  # a binary head (num_classes 1: one logit): label 1 where sigmoid > this


class PSPHead(nn.Module):
    """features[in_index] [B, C, h, w] → logits [B, num_classes, h, w]."""

    def __init__(self, cfg: PSPHeadConfig) -> None:
        super().__init__()
        self.in_index = cfg.in_index
        self.align_corners = cfg.align_corners
        self.psp_modules = PyramidPooling(cfg.in_channels, cfg.channels, cfg.pool_scales)
        width = cfg.in_channels + len(cfg.pool_scales) * cfg.channels
        self.bottleneck = ConcatConvModule(width, cfg.channels, 3, cfg.align_corners)
        self.classifier = nn.Conv2d(cfg.channels, cfg.num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[self.in_index]
        return self.classifier(self.bottleneck([x, *self.psp_modules(x)]))  # cat[x, up(pooled)] → 3×3
