"""One forward pass over a batch of same-shape windows: normalise, pad, (mirror), run, check, (softmax).

By default a window's values are the model's logits. The PSPNet author's protocol (`Params.window_*`)
instead pads a window smaller than the crop to the crop size, centred, with the mean colour; runs it
together with its mirror image; and returns the softmax probabilities averaged over the two.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ModelOutputError
from .model import SegModel
from .presets import Params

MIN_SIDE = 32  # the networks downsample 32×: smaller inputs are padded, run, and their values cropped back


def window_pads(shape: tuple[int, int], params: Params) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of a window of `shape` (centred to the crop with `window_pad`)."""
    if not params.window_pad or params.crop is None:
        return (0, 0, 0, 0)
    ph, pw = max(params.crop[0] - shape[0], 0), max(params.crop[1] - shape[1], 0)
    return (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)


def _check(out: torch.Tensor) -> None:
    # NaN and ±inf propagate into the sum (one cheap pass); only a sum that overflows needs the exact check
    if not bool(torch.isfinite(out.sum())) and not bool(torch.isfinite(out).all()):
        raise ModelOutputError(
            "the model produced NaN or infinite logits",
            hint="its weights or normalisation are broken (NaN weights, image_std 0, a float16 overflow?)",
        )
    sample = out[..., ::8, ::8]  # a pixel with distinct logits there settles it; else every pixel is checked
    if out.shape[1] > 1 and bool((sample.amax(1) == sample.amin(1)).all()) and bool((out.amax(1) == out.amin(1)).all()):
        raise ModelOutputError(
            "the model produced the same logit for every class at every pixel: its labels would mean nothing",
            hint="check the classifier weights (all zero?) and the normalisation",
        )


def forward(
    model: SegModel, crops: np.ndarray, params: Params, upsample: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Values [B, C, h, w] (float32: logits, or probabilities with `window_softmax`) of crops [B, h, w, 3]
    (uint8, or float32 pixel values 0..255), and the image-level probabilities [B, S] of a model that has
    them (else None). Without `upsample` the values may come at the model's own resolution (1/4, 1/8)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(model.device).permute(0, 3, 1, 2).float().contiguous()
    x = model.normalize(x)  # NCHW (faster on CPU); zeros from here on are the mean colour
    h, w = x.shape[-2:]
    top, bottom, left, right = window_pads((h, w), params)
    bottom += max(0, MIN_SIDE - (top + h + bottom))
    right += max(0, MIN_SIDE - (left + w + right))
    padded = bool(top or bottom or left or right)
    if padded:
        x = F.pad(x, (left, right, top, bottom))
    if params.window_flip:
        x = torch.cat([x, x.flip(-1)])  # [2B, 3, H, W]: each window and its mirror image
    out = model(x.to(model.dtype), upsample=upsample or padded)  # a padded input is cropped at its own size
    out, image = out if isinstance(out, tuple) else (out, None)
    out = out.float()
    _check(out)
    if params.window_softmax:
        out = model.heads.softmax(out, 1)
    if image is not None:
        _check(image[:, :, None, None].float())
        image = image.float().softmax(1)
    if params.window_flip:
        b = out.shape[0] // 2
        out = (out[:b] + out[b:].flip(-1)) / 2
        image = None if image is None else (image[:b] + image[b:]) / 2
    if out.shape[-2:] == x.shape[-2:]:
        out = out[:, :, top : top + h, left : left + w]
    return out, image
