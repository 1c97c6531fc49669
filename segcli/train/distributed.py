"""Training on several processes: torch.distributed with DistributedDataParallel, started by torchrun
(single or multi-node) or SLURM's srun, one process ("rank") per GPU or per CPU share.

Every rank runs the same `segcli train` command. The global batch of an iteration is `--batch` images per
rank × ranks × `--accumulate` micro-batches; sample g of the run stays the pure function of (seed, g) that
one process reads, and rank r takes the samples ((s · K + k) · W + r) · B + j of iteration s, micro-batch k
(W ranks, B per rank, K micro-batches): each image once per epoch across the ranks, and 2 ranks × batch 1
read exactly what 1 rank × batch 2 reads. The loss of each rank divides by the global batch's pixel count
(`share`), so DDP's mean of the ranks' gradients is the gradient of the global batch's loss; `--sync-bn`
computes BatchNorm's statistics over the global batch too (torch's SyncBatchNorm on CUDA, `SyncBatchNorm2d`
below on CPUs, where torch has none). Rank 0 alone writes checkpoints, the log, the report and RUN/model;
every rank resumes from the same checkpoint. A rank that dies makes the others stop with one line.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UsageError
from .loss import Share

TIMEOUT = timedelta(hours=2)  # a collective waits this long (rank 0 validating while the others wait)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size}"


def _int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(
            f"${name}={text!r} is not a whole number", hint="start the ranks with torchrun or srun"
        ) from None


def from_env() -> World:
    """The process's place in the run: torchrun's (and Ray Train's) RANK / WORLD_SIZE / LOCAL_RANK, else
    SLURM's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (srun), else one process."""
    for rank, size, local in (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
        r, n, lr = _int(rank), _int(size), _int(local)
        if r is not None and n is not None:
            if not 0 <= r < n or n > 4096:
                raise UsageError(f"${rank}={r} with ${size}={n}: not a rank of the run")
            return World(r, n, lr if lr is not None else 0)
    return World()


def join(world: World, device: str) -> torch.device:
    """Join the run's process group (gloo on CPUs, NCCL on CUDA) and return this rank's device: `cuda`
    means the rank's own GPU (cuda:LOCAL_RANK)."""
    where = torch.device(device)
    if where.type == "cuda" and where.index is None:
        where = torch.device("cuda", world.local_rank)
    if not world.distributed or dist.is_initialized():  # one process; or Ray Train made the group
        return where
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise UsageError(
            f"{world}: ${' and $'.join(missing)} not set",
            hint="torchrun sets them; under srun export MASTER_ADDR (the first node) and MASTER_PORT",
        )
    if where.type == "cuda":
        torch.cuda.set_device(where)
    backend = "nccl" if where.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT)
    _joined.append(True)
    return where


_joined: list[bool] = []  # whether `join` made the process group (Ray Train makes and ends its own)


def leave(world: World) -> None:
    if _joined and dist.is_initialized():
        dist.destroy_process_group()
        _joined.clear()


def share(world: World) -> Share | None:
    """The loss's `Share` for this world: a denominator averaged over the ranks (the sum over every rank's
    batch, over the number of ranks)."""
    return functools.partial(mean, world) if world.distributed else None


def mean(world: World, values: torch.Tensor) -> torch.Tensor:
    """`values` averaged over the ranks (the same tensor back in one process)."""
    if world.distributed:
        values = values.clone()
        dist.all_reduce(values)
        values /= world.size
    return values


def anyone(world: World, flag: bool) -> bool:
    """Whether `flag` is set on any rank (a Ctrl-C or SIGTERM reaches the ranks at different steps)."""
    if not world.distributed:
        return flag
    t = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather(world: World, value: object) -> list[object]:
    """Every rank's `value`, in rank order (`[value]` in one process)."""
    if not world.distributed:
        return [value]
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, value)
    return out


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch: the mean, then the variance
    about it, each summed over the ranks (two differentiable all-reduces; the variance as BatchNorm's own
    two-pass form, not E[x²] − E[x]²). Inference and the state dict are BatchNorm2d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        with warnings.catch_warnings():  # torch ≥ 2.10 points to a private replacement; this one still works
            warnings.filterwarnings("ignore", "torch.distributed.nn.functional", FutureWarning)
            from torch.distributed.nn.functional import all_reduce as reduce_

        def all_reduce(t: torch.Tensor) -> torch.Tensor:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "torch.distributed.nn.functional", FutureWarning)
                return reduce_(t)

        c = x.shape[1]
        count = torch.tensor(float(x.numel() // c), dtype=x.dtype, device=x.device)
        total = all_reduce(torch.cat([x.sum((0, 2, 3)), count[None]]))  # [C + 1]: sums, pixels
        n = total[c].detach()
        mu = total[:c] / n  # [C]
        var = all_reduce(((x - mu[None, :, None, None]) ** 2).sum((0, 2, 3))) / n  # [C], biased
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mu.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(float(n) - 1, 1.0), alpha=m)
        y = (x - mu[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` with every BatchNorm2d synchronised across the ranks (the same parameters and buffers: build
    the optimizer after): torch's SyncBatchNorm on CUDA, `SyncBatchNorm2d` in place elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    for m in net.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SyncBatchNorm2d  # the same state, a forward that all-reduces
    return net


__all__ = ["SyncBatchNorm2d", "World", "anyone", "from_env", "gather", "join", "leave", "mean", "share"]
