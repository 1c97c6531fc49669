"""Pyramid Pooling Module (Zhao et al., CVPR 2017), shared by the UPerNet and PSPNet heads."""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvModule, conv_upsampled_concat, resize


class PyramidPooling(nn.ModuleList):
    """x [B, C, h, w] → one [B, channels, h, w] map per bin size: adaptive average pool to s×s, 1×1 conv,
    bilinear upsampling back to h×w. Children are `Sequential(pool, ConvModule)` (keys `{i}.1.conv.*`)."""

    def __init__(
        self, in_channels: int, channels: int, scales: tuple[int, ...] = (1, 2, 3, 6), align_corners: bool = False
    ) -> None:
        super().__init__(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels, channels, 1)) for s in scales
        )
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = tuple(x.shape[-2:])
        return [resize(branch(x), size, self.align_corners) for branch in self]

    def fuse(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """``conv(cat([x, *self(x)]))`` (the PPM bottleneck's convolution) without upsampling the pooled
        maps first: see `conv_upsampled_concat`."""
        return conv_upsampled_concat(conv, [x, *(branch(x) for branch in self)], tuple(x.shape[-2:]), self.align_corners)
