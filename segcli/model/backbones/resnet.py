"""ResNetV1c (He et al., CVPR 2016; the "c" deep stem of Bag of Tricks), as mmsegmentation and the UPerNet and
PSPNet authors build it.

Deep stem (three 3×3 convs, the first with stride 2: 32-32-64 in mmseg, `stem_channels` 128 → 64-64-128 in
the CSAIL and semseg code) and a 3×3 stride-2 max pool, then four stages of residual blocks: bottlenecks
(ResNet-50/101/152, stride in the 3×3 conv, "pytorch" style) or basic blocks (ResNet-18/34). The dilated
variant ("D8": strides 1,2,1,1 and dilations 1,1,2,4) keeps the last two stages at 1/8 resolution; with
`contract_dilation` (mmseg, CSAIL) the first block of a dilated stage uses half the dilation in its strided
conv, without it (semseg) every block uses the full one. A basic block dilates both its 3×3 convs in the CSAIL
ResNet-18 (`dilate_conv2`), only the first in mmseg's. `multi_grid` (mmseg) gives each block of the last stage
its own dilation instead. Parameter names follow mmseg's `ResNetV1c` (`stem.{0,1,3,4,6,7}`,
`layer{1-4}.{i}.conv{1-3}/bn{1-3}/downsample.{0,1}`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import ConfigError

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BASIC_DEPTHS = (18, 34)  # basic blocks; deeper ResNets use bottlenecks


@dataclass(frozen=True)
class ResNetConfig:
    depth: int = 50
    strides: tuple[int, ...] = (1, 2, 2, 2)
    dilations: tuple[int, ...] = (1, 1, 1, 1)
    contract_dilation: bool = True
    stem_channels: int = 64
    in_channels: int = 3
    blocks: tuple[int, ...] | None = None  # overrides the block counts of `depth` (reduced test models)
    dilate_conv2: bool = True  # basic blocks: the second 3×3 conv dilated too (CSAIL); mmseg's is not
    multi_grid: tuple[int, ...] | None = None  # the last stage's blocks' dilations (mmseg `multi_grid`)

    @property
    def stage_blocks(self) -> tuple[int, ...]:
        return self.blocks or BLOCKS[self.depth]

    @property
    def block(self) -> type[BasicBlock] | type[Bottleneck]:
        return BasicBlock if self.depth in BASIC_DEPTHS else Bottleneck

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(64 * 2**i * self.block.expansion for i in range(len(self.stage_blocks)))

    def __post_init__(self) -> None:
        if self.blocks is None and self.depth not in BLOCKS:
            raise ConfigError(f"ResNet: depth {self.depth} is not one of {', '.join(map(str, BLOCKS))}")
        if not len(self.stage_blocks) == len(self.strides) == len(self.dilations):
            raise ConfigError("ResNet: blocks, strides and dilations need one value per stage")
        if self.multi_grid is not None and len(self.multi_grid) != self.stage_blocks[-1]:
            raise ConfigError(
                f"ResNet: multi_grid has {len(self.multi_grid)} values for {self.stage_blocks[-1]} blocks in the last stage"
            )


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride, dilation) → 1×1 ×4 channels, each with BatchNorm; ReLU after the residual sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(nn.Module):
    """3×3 (stride, dilation) → 3×3 (dilation), each with BatchNorm; ReLU after the residual sum."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
        dilation2: int | None = None,
    ) -> None:
        super().__init__()
        d2 = dilation if dilation2 is None else dilation2
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=d2, dilation=d2, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _stage(cfg: ResNetConfig, i: int, inplanes: int) -> nn.Sequential:
    """Stage `i`: its blocks with their strides and dilations (the first block may contract its dilation,
    `multi_grid` sets the last stage's, a basic block's second conv follows `dilate_conv2`)."""
    planes, blocks, stride, dilation = 64 * 2**i, cfg.stage_blocks[i], cfg.strides[i], cfg.dilations[i]
    block = cfg.block
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    first = dilation // 2 if cfg.contract_dilation and dilation > 1 else dilation
    per_block = [first] + [dilation] * (blocks - 1)
    if cfg.multi_grid is not None and i == len(cfg.stage_blocks) - 1:
        per_block = list(cfg.multi_grid)
    layers: list[nn.Module] = []
    for j, d in enumerate(per_block):
        args = (inplanes if j == 0 else out, planes, stride if j == 0 else 1, d, downsample if j == 0 else None)
        if block is BasicBlock:  # CSAIL: conv2 at the stage's dilation (not contracted); mmseg: undilated
            conv2 = d if cfg.multi_grid is not None and i == len(cfg.stage_blocks) - 1 else dilation
            layers.append(BasicBlock(*args, dilation2=conv2 if cfg.dilate_conv2 else 1))
        else:
            layers.append(Bottleneck(*args))
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """[B, 3, H, W] → four maps [B, 256·2^i, H/s_i, W/s_i]; s = 4, 8, 16, 32 (or 4, 8, 8, 8 when dilated)."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.out_channels = cfg.out_channels
        half = cfg.stem_channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, half, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, cfg.stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(cfg.stem_channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = cfg.stem_channels
        for i in range(len(cfg.stage_blocks)):
            self.add_module(f"layer{i + 1}", _stage(cfg, i, inplanes))
            inplanes = 64 * 2**i * cfg.block.expansion

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.stem(x))  # [B, 64, H/4, W/4]
        features = []
        for i in range(len(self.config.stage_blocks)):
            x = getattr(self, f"layer{i + 1}")(x)
            features.append(x)
        return features
