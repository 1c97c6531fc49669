"""Unified perceptual parsing (Xiao et al., ECCV 2018): the UPerNet trunk with four heads from one pass.

The trunk is UPerHead's (PPM with precise RoI pooling, pool → upsample → conv; FPN; fusion of P2…P5),
then: `scene_head` on the PPM output (3×3 conv → global average → 1×1: image-level scene logits),
`material_head` on P2, `object_head` and `part_head` on the fusion (3×3 conv → 1×1 each). Parts are one
softmax group per object that has parts (see `engine.heads.PartGroup`). Module names follow the authors'
`UPerNet` (`models/models.py`); their files map onto them by `formats.csail`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...engine.heads import Heads, PartGroup
from ..layers import ConvModule
from .uper import UPerHead, UPerHeadConfig


@dataclass(frozen=True)
class UPPHeadConfig:
    in_channels: tuple[int, ...]  # backbone channels at strides 4, 8, 16, 32
    num_classes: int  # objects (including 0, "-")
    part_groups: tuple[PartGroup, ...]  # the part head's channel groups, in order
    part_classes: int  # the global part label set (including 0, "-")
    material_classes: int = 26
    scene_classes: int = 365
    channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    align_corners: bool = False

    @property
    def trunk(self) -> UPerHeadConfig:
        return UPerHeadConfig(
            self.in_channels,
            self.num_classes,
            self.channels,
            self.pool_scales,
            self.align_corners,
            ppm_upsample_first=True,
            ppm_precise=True,
        )

    @property
    def heads(self) -> Heads:
        extras = (("material", self.material_classes),)
        return Heads(self.num_classes, extras, self.part_groups, self.scene_classes, self.part_classes)


def _head(channels: int, classes: int) -> nn.Sequential:
    return nn.Sequential(ConvModule(channels, channels, 3, padding=1), nn.Conv2d(channels, classes, kernel_size=1))


class UPPHead(UPerHead):
    """Features [1/4, 1/8, 1/16, 1/32] → (pixels [B, objects + materials + parts, H/4, W/4], scene [B, S])."""

    def __init__(self, cfg: UPPHeadConfig) -> None:
        super().__init__(cfg.trunk, classifier=False)
        ch = cfg.channels
        parts = sum(len(g.parts) for g in cfg.part_groups)
        self.scene_head = nn.Sequential(
            ConvModule(ch, ch, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, cfg.scene_classes, kernel_size=1)
        )
        self.object_head = _head(ch, cfg.num_classes)
        self.part_head = _head(ch, parts)
        self.material_head = _head(ch, cfg.material_classes)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        out = self.tasks(features, {"object", "part", "material", "scene"})
        return torch.cat([out["object"], out["material"], out["part"]], dim=1), out["scene"]

    def tasks(self, features: list[torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
        """The logits of the heads in `wanted` alone ("object" [B, O, h, w], "part" [B, P, h, w], "material"
        [B, M, h, w] at 1/4; "scene" [B, S]): the authors' training `output_switch`, so the other heads
        neither run (their BatchNorm statistics stay) nor get gradients."""
        outs = self.pyramid(features)
        out: dict[str, torch.Tensor] = {}
        if "scene" in wanted:
            out["scene"] = self.scene_head(outs[-1]).flatten(1)
        if "material" in wanted:
            out["material"] = self.material_head(outs[0])
        if wanted & {"object", "part"}:
            fused = self.fpn_bottleneck(outs)  # the authors' conv_fusion
            if "object" in wanted:
                out["object"] = self.object_head(fused)
            if "part" in wanted:
                out["part"] = self.part_head(fused)
        return out
