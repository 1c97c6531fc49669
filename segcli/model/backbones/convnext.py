"""ConvNeXt (Liu et al., CVPR 2022) as a UPerNet backbone: features at strides 4, 8, 16, 32.

Parameter names follow the Hugging Face `ConvNextBackbone` layout that the openmmlab/upernet-convnext-*
checkpoints use, so those files load without renaming. Every LayerNorm uses eps 1e-6 (the config's
`layer_norm_eps` only applies to a classification pooler the backbone does not have).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import ConfigError
from ..layers import LayerNorm2d, activation, check_backbone

EPS = 1e-6


@dataclass(frozen=True)
class ConvNeXtConfig:
    depths: tuple[int, ...] = (3, 3, 9, 3)
    widths: tuple[int, ...] = (96, 192, 384, 768)
    in_channels: int = 3
    patch_size: int = 4
    layer_scale: bool = True  # False when the checkpoint was trained with layer_scale_init_value = 0
    act: str = "gelu"
    out_indices: tuple[int, ...] | None = None  # the stages (from 0) whose maps the heads read; None: all

    @property
    def stages_out(self) -> tuple[int, ...]:
        return self.out_indices if self.out_indices is not None else tuple(range(len(self.depths)))

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(self.widths[i] for i in self.stages_out)

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.widths):
            raise ConfigError(f"ConvNeXt: {len(self.depths)} depths but {len(self.widths)} widths")
        check_backbone(self.stages_out, len(self.depths), self.in_channels, self.act, "ConvNeXt")


class ConvNeXtLayer(nn.Module):
    """7×7 depthwise conv → LN → Linear 4C → act → Linear C → layer scale, plus the residual."""

    def __init__(self, dim: int, act: str, layer_scale: bool) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.layernorm = nn.LayerNorm(dim, eps=EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = activation(act)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale_parameter = nn.Parameter(torch.ones(dim)) if layer_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # [B, H, W, C]
        y = self.pwconv2(self.act(self.pwconv1(self.layernorm(y))))
        if self.layer_scale_parameter is not None:
            y = self.layer_scale_parameter * y
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtStage(nn.Module):
    """Optional downsampling (LN, 2×2 stride-2 conv) followed by `depth` layers."""

    def __init__(self, in_dim: int, out_dim: int, depth: int, downsample: bool, act: str, layer_scale: bool):
        super().__init__()
        self.downsampling_layer = nn.ModuleList(
            [LayerNorm2d(in_dim, eps=EPS), nn.Conv2d(in_dim, out_dim, kernel_size=2, stride=2)] if downsample else []
        )
        self.layers = nn.ModuleList([ConvNeXtLayer(out_dim, act, layer_scale) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.downsampling_layer:
            x = layer(x)
        for layer in self.layers:
            x = layer(x)
        return x


class ConvNeXtEmbeddings(nn.Module):
    def __init__(self, cfg: ConvNeXtConfig) -> None:
        super().__init__()
        self.patch_embeddings = nn.Conv2d(
            cfg.in_channels, cfg.widths[0], kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.layernorm = LayerNorm2d(cfg.widths[0], eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layernorm(self.patch_embeddings(x))


class ConvNeXtEncoder(nn.Module):
    def __init__(self, cfg: ConvNeXtConfig) -> None:
        super().__init__()
        dims = (cfg.widths[0], *cfg.widths)
        self.stages = nn.ModuleList(
            ConvNeXtStage(dims[i], dims[i + 1], cfg.depths[i], i > 0, cfg.act, cfg.layer_scale)
            for i in range(len(cfg.depths))
        )


class ConvNeXt(nn.Module):
    """[B, 3, H, W] → a map [B, C_i, H/s, W/s] per stage out, s = 4, 8, 16, 32 (floor division per stage)."""

    def __init__(self, cfg: ConvNeXtConfig) -> None:
        super().__init__()
        self.config = cfg
        self.out_channels = cfg.out_channels
        self.embeddings = ConvNeXtEmbeddings(cfg)
        self.encoder = ConvNeXtEncoder(cfg)
        self.hidden_states_norms = nn.ModuleDict(
            {f"stage{i + 1}": LayerNorm2d(cfg.widths[i], eps=EPS) for i in cfg.stages_out}
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embeddings(x)  # [B, C0, H/4, W/4]
        features = []
        for i, stage in enumerate(self.encoder.stages):
            x = stage(x)
            if i in self.config.stages_out:
                features.append(self.hidden_states_norms[f"stage{i + 1}"](x))
        return features
