"""Swin Transformer (Liu et al., ICCV 2021) as a UPerNet backbone: features at strides 4, 8, 16, 32.

Parameter names follow the Hugging Face `SwinBackbone` layout of the openmmlab/upernet-swin-* checkpoints
(separate query/key/value Linears; `downsample.reduction` in the original Swin concatenation order).
Like mmsegmentation and the HF backbone (`always_partition=True`), the window size and shift stay fixed
whatever the feature size: maps that are not a multiple of the window are zero-padded at the bottom/right
inside each block, and the shift mask is built on the padded map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..layers import activation, check_backbone

EPS = 1e-5  # nn.LayerNorm's default, used by the patch-embedding, patch-merging and output norms
MASK_VALUE = -100.0  # added to attention logits between tokens from different shifted regions


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    in_channels: int = 3
    patch_size: int = 4
    eps: float = 1e-5  # `layer_norm_eps`: the two norms inside every block
    act: str = "gelu"
    out_indices: tuple[int, ...] | None = None  # the stages (from 0) whose maps the heads read; None: all

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def stages_out(self) -> tuple[int, ...]:
        return self.out_indices if self.out_indices is not None else tuple(range(len(self.depths)))

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(self.widths[i] for i in self.stages_out)

    def __post_init__(self) -> None:
        if len(self.num_heads) != len(self.depths):
            raise ConfigError(f"Swin: {len(self.depths)} stages but {len(self.num_heads)} num_heads")
        for dim, heads in zip(self.widths, self.num_heads, strict=True):
            if dim % heads:
                raise ConfigError(f"Swin: stage width {dim} is not divisible by its {heads} attention heads")
        check_backbone(self.stages_out, len(self.depths), self.in_channels, self.act, "Swin")


def relative_position_index(window: int) -> torch.Tensor:
    """[N, N] int64 index into the (2w-1)² bias table for the N = w² tokens of a window (on the CPU)."""
    r = torch.arange(window, device="cpu")
    coords = torch.stack(torch.meshgrid(r, r, indexing="ij")).flatten(1)  # [2, N]
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # [N, N, 2] in [0, 2w-2]
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """[B, H, W, C] → [B * H/w * W/w, w*w, C]."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(windows: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """[B * h/w * wd/w, w*w, C] → [B, h, wd, C]."""
    c = windows.shape[-1]
    x = windows.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, wd, c)


def shift_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """[nW, N, N] additive mask (0 or -100) for a padded h × w map cyclically shifted by `shift`."""
    region = torch.zeros(1, h, w, 1, device=device)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, (hs, ws) in enumerate((hs, ws) for hs in bounds for ws in bounds):
        region[:, hs, ws, :] = i
    ids = window_partition(region, window).squeeze(-1)  # [nW, N]
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


class SwinSelfAttention(nn.Module):
    relative_position_index: torch.Tensor  # [N, N] int64 buffer, N = window²

    def __init__(self, dim: int, heads: int, window: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        # A fixed function of the window size; built on the CPU even when the model is built on "meta".
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.query = nn.Linear(dim, dim, bias=qkv_bias)
        self.key = nn.Linear(dim, dim, bias=qkv_bias)
        self.value = nn.Linear(dim, dim, bias=qkv_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape  # [B * nW, N, C]
        q, k, v = (proj(x).view(bw, n, self.heads, -1).transpose(1, 2) for proj in (self.query, self.key, self.value))
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1).to(q.dtype)  # [h, N, N]
        if mask is not None:  # [nW, N, N], the same for every image: windows are batch-major
            bias = bias + mask[:, None].to(q.dtype)  # [nW, h, N, N]
            if bw != mask.shape[0]:
                bias = bias.repeat(bw // mask.shape[0], 1, 1, 1)  # [B * nW, h, N, N] (4-D: exports to ONNX)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B * nW, h, N, d]
        return out.transpose(1, 2).reshape(bw, n, c)


class SwinSelfOutput(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)


class SwinAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, qkv_bias: bool) -> None:
        super().__init__()
        self.self = SwinSelfAttention(dim, heads, window, qkv_bias)
        self.output = SwinSelfOutput(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output.dense(self.self(x, mask))


class _Dense(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim_in, dim_out)


class SwinLayer(nn.Module):
    """(shifted) window attention and MLP, each pre-normed with a residual; tokens [B, H*W, C]."""

    def __init__(self, cfg: SwinConfig, dim: int, heads: int, shift: int) -> None:
        super().__init__()
        self.window = cfg.window_size
        self.shift = shift
        self.layernorm_before = nn.LayerNorm(dim, eps=cfg.eps)
        self.attention = SwinAttention(dim, heads, cfg.window_size, cfg.qkv_bias)
        self.layernorm_after = nn.LayerNorm(dim, eps=cfg.eps)
        hidden = int(cfg.mlp_ratio * dim)
        self.intermediate = _Dense(dim, hidden)
        self.act = activation(cfg.act)
        self.output = _Dense(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        b, _, c = x.shape
        ws, s = self.window, self.shift
        y = self.layernorm_before(x).view(b, h, w, c)
        y = F.pad(y, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))  # [B, Hp, Wp, C]
        hp, wp = y.shape[1:3]
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = self.attention(window_partition(y, ws), mask if s else None)  # [B * nW, ws*ws, C]
        y = window_reverse(y, ws, hp, wp)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y[:, :h, :w, :].reshape(b, h * w, c)
        return x + self.output.dense(self.act(self.intermediate.dense(self.layernorm_after(x))))


class SwinPatchMerging(nn.Module):
    """[B, H*W, C] → [B, ⌈H/2⌉*⌈W/2⌉, 2C]: 2×2 neighbours concatenated (order x00, x10, x01, x11)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=EPS)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    downsample: SwinPatchMerging | None

    def __init__(self, cfg: SwinConfig, dim: int, depth: int, heads: int, downsample: bool) -> None:
        super().__init__()
        self.window = cfg.window_size
        self.blocks = nn.ModuleList(
            SwinLayer(cfg, dim, heads, shift=0 if i % 2 == 0 else cfg.window_size // 2) for i in range(depth)
        )
        self.downsample = SwinPatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        mask = None
        if len(self.blocks) > 1:  # every odd block is shifted by window // 2: one mask for all of them
            ws = self.window
            mask = shift_mask(-(-h // ws) * ws, -(-w // ws) * ws, ws, ws // 2, x.device)
        for block in self.blocks:
            x = block(x, h, w, mask)
        return x


class _PatchEmbeddings(nn.Module):
    """The patchify convolution (its own module: the checkpoints name it `patch_embeddings.projection`)."""

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(cfg.in_channels, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)


class SwinEmbeddings(nn.Module):
    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.patch = cfg.patch_size
        self.patch_embeddings = _PatchEmbeddings(cfg)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        p = self.patch
        x = F.pad(x, (0, (p - x.shape[-1] % p) % p, 0, (p - x.shape[-2] % p) % p))
        x = self.patch_embeddings.projection(x)  # [B, C, H/4, W/4]
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class SwinEncoder(nn.Module):
    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        n = len(cfg.depths)
        self.layers = nn.ModuleList(
            SwinStage(cfg, cfg.widths[i], cfg.depths[i], cfg.num_heads[i], downsample=i < n - 1) for i in range(n)
        )


class Swin(nn.Module):
    """[B, 3, H, W] → four maps [B, C_i, ⌈H/s⌉, ⌈W/s⌉] for s = 4, 8, 16, 32 (ceil: inputs are padded)."""

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.config = cfg
        self.out_channels = cfg.out_channels
        self.embeddings = SwinEmbeddings(cfg)
        self.encoder = SwinEncoder(cfg)
        self.hidden_states_norms = nn.ModuleDict(
            {f"stage{i + 1}": nn.LayerNorm(cfg.widths[i], eps=EPS) for i in cfg.stages_out}
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, h, w = self.embeddings(x)  # [B, H/4 * W/4, C0]
        features = []
        for i, layer in enumerate(self.encoder.layers):
            stage = cast(SwinStage, layer)
            x = stage(x, h, w)
            if i in self.config.stages_out:
                out = self.hidden_states_norms[f"stage{i + 1}"](x)
                features.append(out.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x, h, w)
                h, w = (h + 1) // 2, (w + 1) // 2
        return features
