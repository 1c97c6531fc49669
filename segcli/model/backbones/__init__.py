"""Backbones: each maps [B, 3, H, W] to four feature maps at strides 4, 8, 16, 32."""

from __future__ import annotations

from torch import nn

from .convnext import ConvNeXt, ConvNeXtConfig
from .resnet import ResNet, ResNetConfig
from .swin import Swin, SwinConfig

BackboneConfig = ConvNeXtConfig | SwinConfig | ResNetConfig

BACKBONES: dict[type, type[nn.Module]] = {ConvNeXtConfig: ConvNeXt, SwinConfig: Swin, ResNetConfig: ResNet}


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    return BACKBONES[type(cfg)](cfg)


__all__ = [
    "BACKBONES",
    "BackboneConfig",
    "ConvNeXt",
    "ConvNeXtConfig",
    "ResNet",
    "ResNetConfig",
    "Swin",
    "SwinConfig",
    "build_backbone",
]
