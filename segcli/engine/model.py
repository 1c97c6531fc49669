"""What the engine runs: any model with this interface (the PyTorch `Segmentor`, the ONNX runner)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SegModel(Protocol):
    """Normalised images in, logits at the same size out.

    `normalize` maps [B, 3, H, W] RGB pixel values (0..255, any float dtype) to the network's input; calling
    the model maps that to logits [B, num_classes, H, W] (float, any dtype: the engine casts to float32).
    Views are resized with `align_corners` (the model's own upsampling convention); inputs are moved to
    `device` and cast to `dtype` before the call.
    """

    @property
    def num_classes(self) -> int: ...

    @property
    def align_corners(self) -> bool: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...
