"""What the engine runs: any model with this interface (the PyTorch `Segmentor`, the ONNX runner)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .heads import Heads


@runtime_checkable
class SegModel(Protocol):
    """Normalised images in, logits at the same size out.

    `normalize` maps [B, 3, H, W] RGB pixel values (0..255, any float dtype) to the network's input; calling
    the model maps that to logits [B, C, H, W] (float, any dtype: the engine casts to float32), or with
    `upsample=False` to logits at the model's own resolution (a model that cannot may return them at the
    input size). `heads` says how the C channels split into heads (C = num_classes for a plain model); a
    model with image-level outputs (the scene) returns `(pixels, image_logits [B, S])`. Inputs are moved
    to `device` and cast to `dtype` before the call.
    """

    @property
    def num_classes(self) -> int: ...

    @property
    def heads(self) -> Heads: ...

    @property
    def align_corners(self) -> bool: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor, upsample: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...
