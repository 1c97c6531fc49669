"""A loaded `Segmentor` run another way than eager PyTorch: the common part of every backend."""

from __future__ import annotations

import math

import torch

from ..engine.heads import Heads
from ..errors import SegcliError
from ..model import Segmentor


def share_text(share: float, decimals: int = 3) -> str:
    """A fraction as a percentage that reads 100 % only when it is 1: rounded down, never up."""
    scale = 10**decimals
    return f"{math.floor(share * 100 * scale) / scale:.{decimals}f}%"


class BackendError(SegcliError):
    """A backend cannot run this model here (not installed, no compiler, an export that disagrees)."""


class Wrapped:
    """A `SegModel` whose call runs `net` another way; normalisation, heads and metadata stay the network's."""

    def __init__(self, net: Segmentor) -> None:
        self.net = net

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.normalize(pixels)

    @property
    def heads(self) -> Heads:
        return self.net.heads

    @property
    def align_corners(self) -> bool:
        return self.net.align_corners

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    @property
    def device(self) -> torch.device:
        return self.net.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.dtype

    def __call__(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.net(x, upsample)
