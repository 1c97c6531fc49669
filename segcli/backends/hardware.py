"""What the machine can do fast: CPU flags, bfloat16 support, and the dtype `auto` picks.

`--dtype auto` (the default) is bfloat16 where the hardware computes it natively — CPUs with AVX512-BF16 or
AMX, CUDA GPUs that support it — for the model families whose labels agree with float32 on trained models
(`BF16_FAMILIES`, measured by `benchmarks/reference_models.py`), and float32 everywhere else. bfloat16 on a
CPU without those instructions is emulated (slower than float32), so `auto` never picks it there.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# backbone families auto may run in bfloat16: labels ≥ 99.5 % equal to float32 and mIoU ≤ 0.3 points lower on
# trained models (benchmarks/reference_models.py, the real architectures trained on generated shapes:
# ConvNeXt-T 99.993 % / -0.02, Swin-T 99.993 % / +0.01, PSPNet-R50-D8 99.980 % / +0.01; random weights, whose
# logits are nearly tied, kept 99.18 / 97.94 / 99.94 %: a floor); the README's Throughput section has the tables
BF16_FAMILIES: frozenset[str] = frozenset({"convnext", "swin", "resnet"})


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where that is not available)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (not by emulation)."""
    if device.type == "cpu":
        return any(f in cpu_flags() for f in BF16_CPU_FLAGS)
    if device.type == "cuda":  # Ampere (8.0) and later compute bf16; older GPUs emulate it
        return bool(torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0))
    return False


def auto_dtype(device: torch.device, family: str | None) -> torch.dtype:
    """What `--dtype auto` runs `family` ("convnext", "swin", "resnet"; None: an export) in on `device`."""
    if family in BF16_FAMILIES and native_bf16(device):
        return torch.bfloat16
    return torch.float32
