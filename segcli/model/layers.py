"""Small building blocks shared by backbones and heads."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class _Fn(nn.Module):
    """A parameter-free activation written as a function."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


# transformers' ACT2FN names (`hidden_act`) → the same functions; prelu and xielu have parameters: not here
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": lambda: nn.GELU(),
    "gelu_python": lambda: nn.GELU(),
    "gelu_10": lambda: _Fn(lambda x: torch.clip(F.gelu(x), -10.0, 10.0)),
    "gelu_fast": lambda: _Fn(lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))),
    "gelu_new": lambda: _Fn(_tanh_gelu),
    "gelu_accurate": lambda: _Fn(_tanh_gelu),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "gelu_python_tanh": lambda: nn.GELU(approximate="tanh"),
    "quick_gelu": lambda: _Fn(lambda x: x * torch.sigmoid(1.702 * x)),
    "laplace": lambda: _Fn(lambda x: 0.5 * (1.0 + torch.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0))))),
    "leaky_relu": lambda: nn.LeakyReLU(),
    "linear": lambda: nn.Identity(),
    "mish": lambda: nn.Mish(),
    "relu": lambda: nn.ReLU(),
    "relu2": lambda: _Fn(lambda x: torch.square(F.relu(x))),
    "relu6": lambda: nn.ReLU6(),
    "sigmoid": lambda: nn.Sigmoid(),
    "silu": lambda: nn.SiLU(),
    "swish": lambda: nn.SiLU(),
    "tanh": lambda: nn.Tanh(),
}
ACTIVATIONS = tuple(sorted(_ACTIVATIONS))


def check_activation(name: str, where: str) -> None:
    """A usage error (naming `where`) unless `name` is an activation segcli computes."""
    if name not in _ACTIVATIONS:
        learned = " (it has learned parameters)" if name in ("prelu", "xielu") else ""
        raise ConfigError(
            f"{where}: unsupported activation {name!r}{learned}", hint=f"segcli computes {', '.join(ACTIVATIONS)}"
        )


def check_backbone(stages_out: tuple[int, ...], stages: int, in_channels: int, act: str, what: str) -> None:
    """What a ConvNeXt or Swin config must satisfy before a network is built: RGB input, a known activation,
    the stages out in increasing order."""
    if in_channels != 3:
        raise ConfigError(f"{what}: {in_channels} input channels; segcli feeds RGB images (3 channels)")
    check_activation(act, what)
    if (
        not stages_out
        or list(stages_out) != sorted(set(stages_out))
        or not 0 <= stages_out[0] <= stages_out[-1] < stages
    ):
        raise ConfigError(f"{what}: stages out {list(stages_out)} must be increasing stage indices below {stages}")


def activation(name: str) -> nn.Module:
    """The activation a Hugging Face config names (`hidden_act`)."""
    check_activation(name, "activation")
    return _ACTIVATIONS[name]()


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] tensor (ConvNeXt's "channels_first" norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # [B, H, W, C]
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ExportForm:
    """A module with a second, export-friendly form of its forward (same function, other operators).

    `segcli export` calls `to_export_form` on every such module of a copy of the model; inference keeps the
    faster form."""

    def to_export_form(self, dynamic: bool) -> None:
        raise NotImplementedError


class ConvModule(nn.Module):
    """conv (no bias) → BatchNorm → ReLU; parameters named `conv.*` and `batch_norm.*`."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.batch_norm(self.conv(x)))


def resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of a [B, C, H, W] tensor; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _shift_add(dst: torch.Tensor, src: torch.Tensor, d: int, dim: int) -> None:
    """dst[i] += src[i + d] along `dim` where i + d is inside (zero padding of a 'same' convolution)."""
    n = dst.shape[dim]
    a, b = max(0, -d), n - max(0, d)
    if b > a:
        dst.narrow(dim, a, b - a).add_(src.narrow(dim, a + d, b - a))


def conv_upsampled_concat(
    conv: nn.Conv2d, parts: list[torch.Tensor], size: tuple[int, int], align_corners: bool = False
) -> torch.Tensor:
    """``conv(cat([resize(p, size) for p in parts], 1))`` without building the upsampled input.

    For a stride-1, zero-padded ("same") convolution (its bias added last), convolution and bilinear upsampling are
    both linear, so each part smaller than `size` is channel-mixed at its own resolution first — one 1×1
    convolution per kernel tap — and only the results are upsampled and shifted into place. Upsampling is
    separable, so the taps of one kernel row are summed along x at the part's own rows before one
    upsampling along y. Same result up to float rounding (tested), a fraction of the work: UPerNet's
    fusion conv sees a 1/4-resolution map and three maps upsampled from 1/8, 1/16 and 1/32.
    """
    w = conv.weight  # [O, sum(C_i), kh, kw]
    out_ch, _, kh, kw = w.shape
    ph, pw = kh // 2, kw // 2
    assert conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
    assert conv.padding == (ph, pw)
    h_out, w_out = size
    out = None
    start = 0
    for x in parts:
        c = x.shape[1]
        wk = w[:, start : start + c]
        start += c
        if tuple(x.shape[-2:]) == tuple(size):
            y = F.conv2d(x, wk, padding=(ph, pw))
            out = y if out is None else out.add_(y)
            continue
        b, _, h, wd = x.shape
        taps = F.conv2d(x, wk.permute(2, 3, 0, 1).reshape(kh * kw * out_ch, c, 1, 1))
        taps = taps.view(b, kh, kw, out_ch, h, wd)  # [B, ky, kx, O, h, w]: each tap's channel mix
        if out is None:
            out = x.new_zeros((b, out_ch, h_out, w_out))
        for ky in range(kh):
            row = x.new_zeros((b, out_ch, h, w_out))
            for kx in range(kw):
                along_x = F.interpolate(taps[:, ky, kx], size=(h, w_out), mode="bilinear", align_corners=align_corners)
                _shift_add(row, along_x, kx - pw, 3)
            along_y = F.interpolate(row, size=(h_out, w_out), mode="bilinear", align_corners=align_corners)
            _shift_add(out, along_y, ky - ph, 2)
    assert out is not None  # there is at least one part
    return out if conv.bias is None else out.add_(conv.bias.view(1, -1, 1, 1))  # a folded BatchNorm's shift


class ConcatConvModule(ConvModule, ExportForm):
    """ConvModule over ``cat([parts[0], *(resize(p, size of parts[0]) for p in parts[1:])])``.

    The inference form never builds the upsampled concatenation (`conv_upsampled_concat`); the export form
    is the plain one (no in-place updates). Same parameters (`conv.*`, `batch_norm.*`), same result up to
    float rounding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, align_corners: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.align_corners = align_corners
        self.fused = True

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        size = (parts[0].shape[-2], parts[0].shape[-1])
        if self.fused:
            y = conv_upsampled_concat(self.conv, parts, size, self.align_corners)
        else:
            y = self.conv(torch.cat([resize(p, size, self.align_corners) for p in parts], dim=1))
        return self.activation(self.batch_norm(y))

    def to_export_form(self, dynamic: bool) -> None:
        self.fused = False
