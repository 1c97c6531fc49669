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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import versions
from .._version import __version__
from ..engine import SegModel
from ..fsutil import atomic_write_bytes, read_json_object
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


MAX_CACHE_BYTES = 4 << 20  # a few thousand entries


def _read() -> dict[str, Any]:
    """The cache's entries; a file that is not one (damaged, a FIFO, a device, nested without end) counts as
    empty, and the next measurement replaces it."""
    try:
        return read_json_object(cache_file(), MAX_CACHE_BYTES)
    except (OSError, ValueError):
        return {}


def _valid(entry: Any) -> bool:
    """An entry as `store` writes it: finite, non-negative seconds per known backend, a choice among them,
    notes of text."""
    if not isinstance(entry, dict):
        return False
    seconds, choice, notes = entry.get("seconds"), entry.get("choice"), entry.get("notes", {})
    if not isinstance(seconds, dict) or not seconds or choice not in seconds or not isinstance(notes, dict):
        return False
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e6 for v in seconds.values())
    return numbers and all(isinstance(k, str) and isinstance(v, str) for k, v in notes.items())


def lookup(k: str) -> dict[str, Any] | None:
    """A cached entry {"seconds": {backend: s}, "choice": backend, "notes": {backend: why}}, or None (none,
    or not one that `store` would have written)."""
    entry = _read().get(k)
    return entry if _valid(entry) else None


def entries() -> list[dict[str, Any]]:
    """The cached choices as `segcli models --backends` lists them (valid entries; what each describes
    itself with: model, view, device, dtype, when measured)."""
    out = []
    for k, entry in sorted(_read().items()):
        if _valid(entry):
            about = {f: entry.get(f) if isinstance(entry.get(f), str) else None for f in DESCRIBED}
            out.append({"key": k, **about, "choice": entry["choice"], "seconds": entry["seconds"]})
    return out


DESCRIBED = ("model", "view", "device", "dtype", "measured_at")  # text fields an entry carries for people


def store(k: str, entry: dict[str, Any]) -> None:
    """Add an entry (a read-only cache only means measuring again next time; of two processes storing at
    once, one entry may be lost and measured again later)."""
    doc = _read()
    doc[k] = entry
    with contextlib.suppress(OSError):
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_file(), json.dumps(doc, indent=1, sort_keys=True).encode())


SPREAD = 1.3  # a backend's slowest timed call beyond this × its fastest: a busy machine, timed once more


def measure(
    models: dict[str, SegModel],
    x: torch.Tensor,
    upsample: bool = True,
    rounds: int = ROUNDS,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Median seconds per call of each model on `x` (one warm-up call each; rounds interleave the models).
    When a model's calls spread beyond `SPREAD` (another process took the CPU), `rounds` more are timed once
    and the medians taken over all."""
    times: dict[str, list[float]] = {name: [] for name in models}
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        x = x.clone()  # an inference tensor, as the engine's inputs are (compiled graphs guard on it)
        for model in models.values():
            model(x, upsample)
        for attempt in range(2):
            for _ in range(rounds):
                for name, model in models.items():
                    sync()
                    start = time.perf_counter()
                    model(x, upsample)
                    sync()
                    times[name].append(time.perf_counter() - start)
            spread = max(max(t) / max(min(t), 1e-9) for t in times.values())
            if attempt or rounds < 2 or spread <= SPREAD:
                break
            if log is not None:
                log(f"auto backend: timed calls spread ×{spread:.2f} (a busy machine?): timing again")
    return {name: statistics.median(t) for name, t in times.items()}


def pick(seconds: dict[str, float]) -> str:
    """The fastest backend; torch unless another beats it by `MARGIN`."""
    best = min(seconds, key=lambda n: seconds[n])
    if "torch" in seconds and seconds[best] > (1 - MARGIN) * seconds["torch"]:
        return "torch"
    return best
