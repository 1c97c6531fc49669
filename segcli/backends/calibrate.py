"""How fast each backend runs a model on this machine: a short interleaved measurement, cached.

The cache (`calibration.json` in segcli's cache) is keyed by what the speed depends on: the CPU (model name
and flags), the thread count, the torch / onnxruntime / segcli versions, the network's architecture (not its
weights), the dtype, the device, the view shape and the batch. An entry holds the median seconds per call of
each backend measured and the choice made from them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .. import versions
from .._version import __version__
from ..engine import SegModel
from ..fsutil import atomic_write_bytes
from ..loading.hub import segcli_cache
from .hardware import cpu_flags, cpu_name

ROUNDS = 3
MARGIN = 0.05  # another backend replaces torch only when it is at least this much faster (machines are noisy)


def cache_file() -> Path:
    return segcli_cache() / "calibration.json"


def key(
    config: Any, dtype: torch.dtype, device: torch.device, shape: tuple[int, int], batch: int, calls: dict[str, Any]
) -> str:
    """The cache key of a measurement: what its figures depend on (`calls`: how the engine will call the model
    and which backends qualified)."""
    parts = {
        "cpu": cpu_name(),
        "flags": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16],
        "threads": torch.get_num_threads(),
        "versions": [torch.__version__, versions.package("onnxruntime"), __version__],
        "network": repr(config),
        "dtype": str(dtype),
        "device": str(device),
        "gpu": _gpu(device),
        "calls": calls,
        "shape": list(shape),
        "batch": batch,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _gpu(device: torch.device) -> list[Any] | None:
    if device.type != "cuda":
        return None
    return [torch.cuda.get_device_name(device), list(torch.cuda.get_device_capability(device))]


def _read() -> dict[str, Any]:
    try:
        doc = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def lookup(k: str) -> dict[str, Any] | None:
    """A cached entry {"seconds": {backend: s}, "choice": backend, ...}, or None."""
    entry = _read().get(k)
    if isinstance(entry, dict) and isinstance(entry.get("choice"), str) and isinstance(entry.get("seconds"), dict):
        return entry
    return None


def store(k: str, entry: dict[str, Any]) -> None:
    """Add an entry (a read-only cache only means measuring again next time; of two processes storing at
    once, one entry may be lost and measured again later)."""
    doc = _read()
    doc[k] = entry
    with contextlib.suppress(OSError):
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_file(), json.dumps(doc, indent=1, sort_keys=True).encode())


def measure(
    models: dict[str, SegModel], x: torch.Tensor, upsample: bool = True, rounds: int = ROUNDS
) -> dict[str, float]:
    """Median seconds per call of each model on `x` (one warm-up call each; rounds interleave the models)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        x = x.clone()  # an inference tensor, as the engine's inputs are (compiled graphs guard on it)
        for model in models.values():
            model(x, upsample)
        for _ in range(rounds):
            for name, model in models.items():
                sync()
                start = time.perf_counter()
                model(x, upsample)
                sync()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def pick(seconds: dict[str, float]) -> str:
    """The fastest backend; torch unless another beats it by `MARGIN`."""
    best = min(seconds, key=lambda n: seconds[n])
    if "torch" in seconds and seconds[best] > (1 - MARGIN) * seconds["torch"]:
        return "torch"
    return best
