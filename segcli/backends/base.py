"""A loaded `Segmentor` run another way than eager PyTorch: the common part of every backend."""

from __future__ import annotations

import torch

from ..engine.heads import Heads
from ..errors import SegcliError
from ..model import Segmentor


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
