"""Pyramid Pooling Module (Zhao et al., CVPR 2017), shared by the UPerNet and PSPNet heads.

Its export form: ONNX has no adaptive average pooling, and exporters fail (or worse) on the 1/2/3/6 bins
when the pooled map is not a multiple of the bin count. Each bin is then computed as an AvgPool when the map
divides evenly, otherwise as two small averaging matrices (rows and columns of the same bins PyTorch uses:
[⌊i·n/s⌋, ⌈(i+1)·n/s⌉)) — the same averages; with `dynamic`, the matrices are built from the input's shape
inside the graph.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvModule, ExportForm, resize


def pool_matrix(n: torch.Tensor | int, s: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[s, n]: row i averages input positions ⌊i·n/s⌋ … ⌈(i+1)·n/s⌉-1, as adaptive_avg_pool does."""
    i = torch.arange(s)
    start = (i * n) // s
    end = ((i + 1) * n + s - 1) // s
    j = torch.arange(n)  # type: ignore[arg-type]  # a traced size (a 0-d tensor) under dynamic export
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


def _tent_integral(t: torch.Tensor) -> torch.Tensor:
    """∫_{-∞}^{t} max(0, 1 − |u|) du: 0 up to −1, (t+1)²/2 up to 0, 1 − (1−t)²/2 up to 1, then 1."""
    t = t.clamp(-1.0, 1.0)
    return torch.where(t <= 0, 0.5 * (t + 1) ** 2, 1 - 0.5 * (1 - t) ** 2)


def prroi_matrix(
    n: torch.Tensor | int, s: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """[s, n]: precise RoI pooling (Jiang et al., ECCV 2018) of a whole axis of length n into s bins.

    The map is the bilinear interpolation of its values at integer points 0..n−1 (zero beyond them); bin i
    is the exact integral of that surface over [i·n/s, (i+1)·n/s], divided by the bin's length n/s. Per
    axis a value at k contributes ∫ tent(x − k) over the bin, so the weights are differences of the tent's
    integral. Unlike an average, the last bin loses the half cell past n − 1 where the surface decays to
    zero: a constant map pools to 1 in every other bin and to 1 − 1/(2·bin) in the last (pixel 0 gets
    half the weight of its neighbours, which the surface's rise from pixel 0 to 1 makes up for)."""
    size = torch.as_tensor(n, dtype=torch.float64)
    bin_len = size / s
    start = torch.arange(s, dtype=torch.float64)[:, None] * bin_len
    k = torch.arange(n, dtype=torch.float64)[None, :]  # type: ignore[arg-type]  # a traced size under export
    return ((_tent_integral(start + bin_len - k) - _tent_integral(start - k)) / bin_len).to(device=device, dtype=dtype)


class PrRoIPool(nn.Module):
    """PrRoIPool2D(s, s, 1.0) over the whole map (ROI [0, 0, W, H]), as the unified-perceptual-parsing PPM
    uses it: two small matrices per bin count, in operators every exporter has."""

    def __init__(self, s: int) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = prroi_matrix(x.shape[-2], self.s, x.dtype, x.device)  # [s, h]
        cols = prroi_matrix(x.shape[-1], self.s, x.dtype, x.device).t()  # [w, s]
        return torch.matmul(torch.matmul(rows, x), cols)  # [B, C, s, s]


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

    Children are `Sequential(pool, ConvModule)` (keys `{i}.1.conv.*`, `{i}.1.batch_norm.*`); the pooling is
    adaptive average pooling, or with `precise` precise RoI pooling over the whole map. By default
    (mmseg, PSPNet) the maps stay s×s: upsampling them to h×w is left to the bottleneck that concatenates
    them (`ConcatConvModule`), which can skip it. With `upsample_first` (the CSAIL UPerNet: pool →
    upsample → conv → BN → ReLU) they are returned at h×w: in inference conv and BN are affine per pixel,
    so they run on the s×s map before the (bilinear, align_corners=False) upsampling, but the ReLU must come
    after it; in training BN's batch statistics are those of the upsampled map, so the authors' order runs."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        scales: tuple[int, ...] = (1, 2, 3, 6),
        upsample_first: bool = False,
        precise: bool = False,
    ) -> None:
        pool = PrRoIPool if precise else nn.AdaptiveAvgPool2d
        super().__init__(nn.Sequential(pool(s), ConvModule(in_channels, channels, 1)) for s in scales)
        self.scales, self.upsample_first, self.precise = scales, upsample_first, precise

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.upsample_first:
            return [branch(x) for branch in self]
        size = (x.shape[-2], x.shape[-1])
        out = []
        for branch in self:
            pool, cm = cast(nn.Sequential, branch)
            assert isinstance(cm, ConvModule)
            if self.training:  # BatchNorm's batch statistics are the upsampled map's: the authors' order
                out.append(cm(resize(pool(x), size)))  # [B, channels, h, w]
                continue
            y = cm.batch_norm(cm.conv(pool(x)))  # [B, channels, s, s]
            out.append(cm.activation(resize(y, size)))  # [B, channels, h, w]
        return out

    def to_export_form(self, dynamic: bool) -> None:
        if self.precise:  # precise RoI pooling is matrix products already
            return
        for branch, s in zip(self, self.scales, strict=True):
            cast(nn.Sequential, branch)[0] = ExportPool(s, dynamic)
