"""One training step and what feeds it: the samples (a pure function of the seed and their index), mixed
precision, the figures logged."""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import SegcliError
from ..io.images import load_image
from ..model import Segmentor
from .augment import Pipeline
from .data import MaskRule, Pair, read_mask
from .distributed import World, mean
from .loss import Share, losses


@dataclass(frozen=True)
class Slice:
    """Which samples a process reads: iterations [first, total) of `batch` images per rank × `ranks` ×
    `accumulate` micro-batches; this process is rank `rank` (see `train.distributed`)."""

    first: int
    total: int
    batch: int
    rank: int = 0
    ranks: int = 1
    accumulate: int = 1

    def __len__(self) -> int:
        return (self.total - self.first) * self.accumulate * self.batch

    def sample(self, i: int) -> int:
        """The run's sample index g of this process's i-th sample."""
        micro, j = self.first * self.accumulate + i // self.batch, i % self.batch  # micro-batch s · K + k
        return (micro * self.ranks + self.rank) * self.batch + j


class Samples(torch.utils.data.Dataset):
    """Sample g of the run: the pair the epoch's seeded permutation puts there, augmented with the generator
    seeded by (seed, g); this process reads the g of its `Slice`."""

    def __init__(self, pairs: list[Pair], rule: MaskRule, pipe: Pipeline, seed: int, part: Slice):
        self.pairs, self.rule, self.pipe, self.seed, self.part = pairs, rule, pipe, seed, part

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.part.sample(i)
        n = len(self.pairs)
        order = np.random.default_rng([self.seed, g // n]).permutation(n)
        pair = self.pairs[int(order[g % n])]
        image, labels = load_image(pair.image), read_mask(pair.mask, self.rule)
        image, labels = self.pipe(image, labels, np.random.default_rng([self.seed, 1 << 20, g]))
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), torch.from_numpy(labels)


class Objective(nn.Module):
    """The network and its loss as one module: what DistributedDataParallel wraps (its forward is the
    training forward, so DDP sees every parameter the loss uses)."""

    def __init__(
        self,
        net: Segmentor,
        mean_over: str = "all",
        class_weight: torch.Tensor | None = None,
        share: Share | None = None,
    ) -> None:
        super().__init__()
        self.net, self.mean_over, self.class_weight, self.share = net, mean_over, class_weight, share

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms of uint8 images [B, 3, H, W] and labels [B, H, W]."""
        device = self.net.device
        x = self.net.normalize(images.to(device, torch.float32))
        return losses(
            self.net, x, labels.to(device), mean_over=self.mean_over, class_weight=self.class_weight, share=self.share
        )


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
    objective: nn.Module,
    opt: torch.optim.Optimizer,
    micro: list[tuple[torch.Tensor, torch.Tensor]],
    amp: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
    world: World | None = None,
) -> dict[str, float]:
    """One optimisation step over micro-batches (uint8 images [B, 3, H, W], labels [B, H, W]), their
    gradients accumulated (DDP's all-reduce on the last only): the loss terms, averaged over the micro-batches
    and the ranks."""
    world = world or World()
    device = next(objective.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    for k, (images, labels) in enumerate(micro):
        sync = k == len(micro) - 1 or not isinstance(objective, DistributedDataParallel)
        with contextlib.nullcontext() if sync else objective.no_sync():  # type: ignore[operator]
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                terms = objective(images, labels)
            loss = terms["total"] / len(micro)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        for name, v in terms.items():
            sums[name] = sums.get(name, 0) + v.detach().float() / len(micro)
    names = list(sums)
    agreed = mean(world, torch.stack([sums[n] for n in names]))
    values = {n: float(v) for n, v in zip(names, agreed, strict=True)}
    if not math.isfinite(values["total"]):
        raise SegcliError(f"the loss is {values['total']} (diverged)", hint="lower --lr, or try --amp off")
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)  # the gradients freed now, not held through the next forward
    return values


def timing(n: int, started: float) -> float:
    return n / max(time.perf_counter() - started, 1e-9)
