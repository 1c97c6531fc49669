"""Pyramid Pooling Module (Zhao et al., CVPR 2017), shared by the UPerNet and PSPNet heads.

Its export form: ONNX has no adaptive average pooling, and exporters fail (or worse) on the 1/2/3/6 bins
when the pooled map is not a multiple of the bin count. Each bin is then computed as an AvgPool when the map
divides evenly, otherwise as two small averaging matrices (rows and columns of the same bins PyTorch uses:
[⌊i·n/s⌋, ⌈(i+1)·n/s⌉)) — the same averages; with `dynamic`, the matrices are built from the input's shape
inside the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvModule, ExportForm, resize


def pool_matrix(n: torch.Tensor | int, s: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[s, n]: row i averages input positions ⌊i·n/s⌋ … ⌈(i+1)·n/s⌉-1, as adaptive_avg_pool does."""
    i = torch.arange(s)
    start = (i * n) // s
    end = ((i + 1) * n + s - 1) // s
    j = torch.arange(n)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


class ExportPool(nn.Module):
    """adaptive_avg_pool2d(x, s) in operators every exporter has.

    Static (`dynamic=False`): x's height and width are constants of the traced graph, so the averaging
    matrices are too (or an AvgPool2d when s divides both). Dynamic: the matrices are built from x's shape."""

    def __init__(self, s: int, dynamic: bool) -> None:
        super().__init__()
        self.s, self.dynamic = s, dynamic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if not self.dynamic:
            h, w = int(h), int(w)
            if h % self.s == 0 and w % self.s == 0:
                return F.avg_pool2d(x, (h // self.s, w // self.s))
        rows = pool_matrix(h, self.s, x.dtype)  # [s, h]
        cols = pool_matrix(w, self.s, x.dtype).t()  # [w, s]
        return torch.matmul(torch.matmul(rows, x), cols)  # [B, C, s, s]


class PyramidPooling(nn.ModuleList, ExportForm):
    """x [B, C, h, w] → one map per bin size s: adaptive average pooling to s×s, then 1×1 conv + BN + ReLU.

    Children are `Sequential(pool, ConvModule)` (keys `{i}.1.conv.*`, `{i}.1.batch_norm.*`). By default
    (mmseg, PSPNet) the maps stay s×s: upsampling them to h×w is left to the bottleneck that concatenates
    them (`ConcatConvModule`), which can skip it. With `upsample_first` (the CSAIL UPerNet: pool →
    upsample → conv → BN → ReLU) they are returned at h×w: conv and BN are affine per pixel, so they run on
    the s×s map before the (bilinear, align_corners=False) upsampling, but the ReLU must come after it."""

    def __init__(
        self, in_channels: int, channels: int, scales: tuple[int, ...] = (1, 2, 3, 6), upsample_first: bool = False
    ) -> None:
        super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels, channels, 1)) for s in scales)
        self.scales, self.upsample_first = scales, upsample_first

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.upsample_first:
            return [branch(x) for branch in self]
        size = tuple(x.shape[-2:])
        out = []
        for pool, cm in self:
            y = cm.batch_norm(cm.conv(pool(x)))  # [B, channels, s, s]
            out.append(cm.activation(resize(y, size)))  # [B, channels, h, w]
        return out

    def to_export_form(self, dynamic: bool) -> None:
        for branch, s in zip(self, self.scales, strict=True):
            branch[0] = ExportPool(s, dynamic)
