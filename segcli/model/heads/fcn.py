"""FCN head (Long et al., CVPR 2015): the auxiliary head trained on the stride-16 features."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import ConvModule


@dataclass(frozen=True)
class FCNHeadConfig:
    in_channels: int
    num_classes: int
    channels: int = 256
    num_convs: int = 1
    concat_input: bool = False
    kernel_size: int = 3
    dilation: int = 1
    in_index: int = 2  # which backbone level it reads (2: stride 16, or 8 in a dilated ResNet)


class FCNHead(nn.Module):
    """features[in_index] [B, C, h, w] → logits [B, num_classes, h, w]."""

    def __init__(self, cfg: FCNHeadConfig) -> None:
        super().__init__()
        self.in_index = cfg.in_index
        pad = (cfg.kernel_size // 2) * cfg.dilation
        dims = [cfg.in_channels] + [cfg.channels] * cfg.num_convs
        convs = [ConvModule(a, b, cfg.kernel_size, pad, cfg.dilation) for a, b in itertools.pairwise(dims)]
        self.convs = nn.Sequential(*convs) if convs else nn.Identity()
        self.conv_cat = (
            ConvModule(cfg.in_channels + cfg.channels, cfg.channels, cfg.kernel_size, cfg.kernel_size // 2)
            if cfg.concat_input
            else None
        )
        self.classifier = nn.Conv2d(cfg.channels, cfg.num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[self.in_index]
        y = self.convs(x)
        if self.conv_cat is not None:
            y = self.conv_cat(torch.cat([x, y], dim=1))
        return self.classifier(y)
