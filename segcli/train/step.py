"""One training step and what feeds it: the samples (a pure function of the seed and their index), mixed
precision, the figures logged."""

from __future__ import annotations

import math
import resource
import sys
import time

import numpy as np
import torch

from ..errors import SegcliError
from ..io.images import load_image
from ..model import Segmentor
from .augment import Pipeline
from .data import MaskRule, Pair, read_mask
from .loss import losses


class Samples(torch.utils.data.Dataset):
    """Sample g (0 ≤ g < total) of the run: the pair the epoch's seeded permutation puts there, augmented
    with the generator seeded by (seed, g)."""

    def __init__(self, pairs: list[Pair], rule: MaskRule, pipe: Pipeline, seed: int, first: int, total: int):
        self.pairs, self.rule, self.pipe, self.seed, self.first, self.total = pairs, rule, pipe, seed, first, total

    def __len__(self) -> int:
        return self.total - self.first

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.first + i
        n = len(self.pairs)
        order = np.random.default_rng([self.seed, g // n]).permutation(n)
        pair = self.pairs[int(order[g % n])]
        image, labels = load_image(pair.image), read_mask(pair.mask, self.rule)
        image, labels = self.pipe(image, labels, np.random.default_rng([self.seed, 1 << 20, g]))
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), torch.from_numpy(labels)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """`--amp auto`: bf16 where it is computed natively (CUDA ≥ 8.0, AVX512-BF16 / AMX CPUs), fp16 on older
    CUDA (with a gradient scaler), else none (float32)."""
    from ..backends.hardware import native_bf16

    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return torch.bfloat16 if native_bf16(device) else None


def max_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def step_once(
    net: Segmentor,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    amp: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
    mean_over: str = "all",
    class_weight: torch.Tensor | None = None,
) -> dict[str, float]:
    """One optimisation step on a batch (uint8 images [B, 3, H, W], labels [B, H, W]): the loss terms."""
    device = next(net.parameters()).device
    x = net.normalize(images.to(device, torch.float32))
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        terms = losses(net, x, labels.to(device), mean_over=mean_over, class_weight=class_weight)
    if not math.isfinite(terms["total"].item()):
        raise SegcliError(
            f"the loss is {terms['total'].item()} (diverged)",
            hint="lower --lr, or try --amp off",
        )
    if scaler is not None:
        scaler.scale(terms["total"]).backward()
        scaler.step(opt)
        scaler.update()
    else:
        terms["total"].backward()
        opt.step()
    opt.zero_grad(set_to_none=True)  # the gradients freed now, not held through the next forward
    return {k: float(v.detach()) for k, v in terms.items()}


def timing(n: int, started: float) -> float:
    return n / max(time.perf_counter() - started, 1e-9)
