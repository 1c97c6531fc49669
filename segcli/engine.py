"""Inference: image → model input → forward → logits or labels at the image's own size.

Logits come back from the model at its input size (e.g. 512×512) and are resized to the image size in
horizontal strips, so `labels` never holds a full-resolution [K, H, W] buffer: each strip is reduced to
its argmax as soon as it is computed. The strip resize reproduces `F.interpolate(mode="bilinear",
align_corners=False)` (same source indices and weights, computed in float32 as PyTorch does).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

from .model import Segmentor
from .presets import Preset

STRIP_BYTES = 64 << 20  # float32 budget of one resized strip [K, rows, W]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow bilinear resize of an RGB uint8 [H, W, 3] array to (h, w), as transformers' processors do."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), resample=Image.Resampling.BILINEAR))


def to_input(image: np.ndarray, model: Segmentor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """RGB uint8 [H, W, 3] → normalised [1, 3, H, W] in the model's dtype on its device."""
    x = torch.tensor(image, device=device).permute(2, 0, 1)[None].float()  # copies: arrays may be read-only
    return model.normalize(x).to(dtype)


def _linear_indices(out_size: int, in_size: int, device: torch.device):
    """Source indices and weights of bilinear resizing along one axis (align_corners=False)."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    src = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(min=0)
    i0 = src.long().clamp_(max=in_size - 1)
    i1 = (i0 + 1).clamp_(max=in_size - 1)
    w1 = (src - i0).clamp_(0, 1)
    return i0.to(device), i1.to(device), (1 - w1).to(device), w1.to(device)


def resized_strips(logits: torch.Tensor, size: tuple[int, int]) -> Iterator[tuple[int, torch.Tensor]]:
    """Bilinear resize of [K, h, w] to [K, H, W], yielded as (first row, [K, rows, W]) strips."""
    k, h, w = logits.shape
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        yield 0, logits
        return
    y0, y1, wy0, wy1 = _linear_indices(out_h, h, logits.device)
    x0, x1, wx0, wx1 = _linear_indices(out_w, w, logits.device)
    rows = max(1, STRIP_BYTES // (4 * k * out_w))
    for r0 in range(0, out_h, rows):
        r1 = min(out_h, r0 + rows)
        top, bottom = logits[:, y0[r0:r1]], logits[:, y1[r0:r1]]  # [K, rows, w]
        top = top[..., x0] * wx0 + top[..., x1] * wx1  # [K, rows, W]: along x first, as PyTorch does
        bottom = bottom[..., x0] * wx0 + bottom[..., x1] * wx1
        yield r0, top * wy0[r0:r1, None] + bottom * wy1[r0:r1, None]


@torch.inference_mode()
def forward(model: Segmentor, image: np.ndarray, preset: Preset, input_size: tuple[int, int]) -> torch.Tensor:
    """Logits [K, h, w] (float32, on the model's device) at the model input size of the preset."""
    param = next(model.parameters())
    x = to_input(resize_image(image, input_size), model, param.device, param.dtype)
    return model(x)[0].float()


@torch.inference_mode()
def logits_at(small: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[K, h, w] → [K, H, W] float32 on the CPU."""
    out = torch.empty((small.shape[0], *size), dtype=torch.float32)
    for r0, strip in resized_strips(small, size):
        out[:, r0 : r0 + strip.shape[1]] = strip.cpu()
    return out


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else np.int32)


@torch.inference_mode()
def labels_at(small: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[K, h, w] → argmax labels [H, W] at `size`, strip by strip (no full-size logit buffer)."""
    out = np.empty(size, dtype=label_dtype(small.shape[0]))
    for r0, strip in resized_strips(small, size):
        out[r0 : r0 + strip.shape[1]] = strip.argmax(0).cpu().numpy()
    return out
