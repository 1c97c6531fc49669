"""BatchNorm folded into the convolution before it, for inference: one pass over each feature map less.

conv(x; W) → BN(γ, β, μ, σ²)  ≡  conv(x; W·s) + (β − μ·s),  s = γ / √(σ² + ε)   (per output channel)

The pairs are declared per module (`PAIRS`), not guessed from the graph: a ResNet block's conv_i → bn_i,
a `ConvModule`'s conv → batch_norm, and a Sequential's consecutive Conv2d, BatchNorm2d children (the stem,
the downsample shortcut). The BatchNorm becomes an `Identity`, so the state dict no longer matches the
checkpoint: folding is for networks that only run from then on (`--backend auto` and `compile`,
`Segmenter.use_backend`), never for export or conversion.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .backbones.resnet import BasicBlock, Bottleneck
from .layers import ConvModule

PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    ConvModule: (("conv", "batch_norm"),),
}


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Make `conv` compute conv → `bn` (eval mode: running statistics) by itself."""
    assert bn.running_mean is not None and bn.running_var is not None and bn.track_running_stats
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)  # [O]
    if bn.weight is not None:
        scale = scale * bn.weight.float()
    shift = -bn.running_mean.float() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.float()
    if conv.bias is not None:
        shift = shift + conv.bias.float() * scale
    w = conv.weight
    conv.weight = nn.Parameter((w.float() * scale.view(-1, 1, 1, 1)).to(w.dtype), requires_grad=False)
    conv.bias = nn.Parameter(shift.to(w.dtype), requires_grad=False)


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    for kind, pairs in PAIRS.items():
        if isinstance(module, kind):
            return list(pairs)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        return [
            (a, b)
            for a, b in itertools.pairwise(names)
            if isinstance(module._modules[a], nn.Conv2d) and isinstance(module._modules[b], nn.BatchNorm2d)
        ]
    return []


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every declared conv → BatchNorm pair of `model` in place; returns how many were folded."""
    n = 0
    for module in list(model.modules()):
        for conv_name, bn_name in _pairs(module):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                fold_conv_bn(conv, bn)
                setattr(module, bn_name, nn.Identity())
                n += 1
    return n
