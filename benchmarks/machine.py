"""The machine a benchmark figure was measured on: one line printed with every table."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_line() -> str:
    """CPU model, CPU count and the flags that decide the kernels (AVX2, AVX-512, BF16, VNNI, AMX)."""
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        line = next(x for x in text.splitlines() if x.startswith("flags"))
        wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
        flags = " ".join(f for f in wanted if f" {f}" in line)
        model = next(x for x in text.splitlines() if x.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} CPUs, flags: {flags or '?'}"
