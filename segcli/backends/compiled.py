"""`--backend compile`: the network through `torch.compile` (inductor), one graph per input shape."""

from __future__ import annotations

import torch

from ..errors import first_line
from ..model import Segmentor
from .base import BackendError, Wrapped


class CompiledModel(Wrapped):
    """The network's forward compiled by inductor. The first input shape gets a static graph; another shape
    (a batch of another size, an edge window) compiles once more, with the changed sizes dynamic (torch's
    automatic dynamic shapes). Compilation happens at the first call of a shape: `warm` does it for the
    shape the engine will use, so a missing C++ compiler fails before any image is read."""

    def __init__(self, net: Segmentor) -> None:
        super().__init__(net)
        self._forward = torch.compile(net.forward)

    def __call__(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self._forward(x, upsample)

    def warm(self, shape: tuple[int, int], batch: int = 1, upsample: bool = True) -> None:
        """Compile the graph for [batch, 3, *shape] inputs (and the engine's `upsample` flag) now."""
        try:
            with torch.inference_mode():  # the engine's inputs are inference tensors: the graph guards on that
                self(torch.zeros((batch, 3, *shape), dtype=self.dtype, device=self.device), upsample)
        except Exception as e:  # noqa: BLE001 - inductor raises many kinds (no compiler, unsupported op)
            raise BackendError(
                f"torch.compile cannot compile this model here ({type(e).__name__}: {first_line(e)})",
                hint="inductor needs a C++ compiler on CPUs (e.g. apt install g++); or use --backend torch",
            ) from None
