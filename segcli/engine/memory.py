"""The memory one prediction holds at its peak, estimated before it runs and refused by name when the
machine does not have it: a 17 MB checkpoint can declare 65536 classes, 64 GiB of logits per 512² window.

The estimate counts the engine's float32 values (the network's own activations are small beside them for
hundreds of classes and more): one forward pass's windows (the network's output, upsampled, and as
probabilities: `VALUE_COPIES`), each view's accumulator band (a row of windows across the view, or the
whole view), the merge buffer of multi-view protocols, and probability / logit outputs at the image's
size. A backend that holds more per pass says so (`memory_factor`, e.g. onnxruntime's arenas).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ImageError, ResourceError
from .model import SegModel
from .presets import Params

VALUE_COPIES = 3
FLOAT = 4  # bytes
GiB = float(1 << 30)
HINT = "run fewer pixels per pass (--mode slide with a smaller --crop, --tile-batch 1, a smaller --resize) or a model with fewer classes"


@dataclass(frozen=True)
class Estimate:
    per_pass: int  # bytes of one forward pass's values: the same for every image of a sliding-window protocol
    total: int  # bytes at the peak, the pass included
    channels: int
    window: tuple[int, int]  # the largest window (or whole view) a pass runs


def estimate(
    model: SegModel, params: Params, sizes: Sequence[tuple[int, int]], *, probs: bool = False, logits: bool = False
) -> Estimate:
    """The peak for images of `sizes` predicted together (one `predict_many` call)."""
    from .predict import view_size

    channels = model.heads.value_channels(params.window_softmax)
    k = model.heads.prob_channels
    factor = float(getattr(model, "memory_factor", 1.0))
    views = len(params.scales) * (2 if params.flip else 1)
    window, per_pass, held = (1, 1), 0, 0
    for h, w in sizes:
        for scale in params.scales:
            vh, vw = view_size(h, w, params, scale)
            if params.mode == "slide" and params.crop is not None and params.stride is not None:
                win = (min(params.crop[0], vh), min(params.crop[1], vw))
                band = min(vh, params.crop[0] + params.stride[0])
            else:
                win, band = (vh, vw), vh
            window = max(window, win, key=lambda s: s[0] * s[1])
            held += channels * band * vw * FLOAT * (2 if params.flip else 1)  # accumulators
        if views > 1:  # averaged rows of the image, waiting for every view
            held += k * min(h, 2 * window[0]) * w * FLOAT
        held += (k * 2 if probs else 0) * h * w + (channels * FLOAT if logits else 0) * h * w  # float16, float32
    passes = params.tile_batch * len(sizes) if params.mode == "slide" else 1
    per_pass = int(factor * passes * channels * window[0] * window[1] * FLOAT * VALUE_COPIES)
    return Estimate(per_pass, per_pass + held, channels, window)


def available(device: torch.device) -> int | None:
    """Bytes this process may still allocate on `device` (None: unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    found = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """cgroup v2: the container's limit less what it uses (None: no limit)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def check(
    model: SegModel, params: Params, sizes: Sequence[tuple[int, int]], *, probs: bool = False, logits: bool = False
) -> None:
    """Refuse a prediction that needs more memory than `model.device` has: ResourceError (exit 2: every image
    would fail) when one forward pass alone does not fit, else ImageError for these images."""
    room = available(model.device)
    if room is None:
        return
    e = estimate(model, params, sizes, probs=probs, logits=logits)
    what = f"{e.channels} classes × {e.window[0]}x{e.window[1]} views"
    if e.per_pass > room:
        raise ResourceError(
            f"the model's {what} need about {e.per_pass / GiB:.1f} GiB per forward pass; "
            f"{room / GiB:.1f} GiB of {model.device.type} memory is available",
            hint=HINT,
        )
    if e.total > room:
        size = "x".join(map(str, sizes[0][::-1])) if len(sizes) == 1 else f"{len(sizes)} images"
        raise ImageError(
            f"a {size} image with {what} needs about {e.total / GiB:.1f} GiB; {room / GiB:.1f} GiB is available",
            hint=HINT + (" (or --batch-size 1)" if len(sizes) > 1 else ""),
        )


def check_pass(device: torch.device, channels: int, shape: tuple[int, int], copies: int, what: str) -> None:
    """Refuse (ResourceError) one call of `what` holding `copies` float32 logits [channels, *shape]."""
    room = available(device)
    need = copies * channels * shape[0] * shape[1] * FLOAT
    if room is not None and need > room:
        raise ResourceError(
            f"{what} of {channels} classes × {shape[0]}x{shape[1]} views needs about {need / GiB:.1f} GiB; "
            f"{room / GiB:.1f} GiB of {device.type} memory is available",
            hint=HINT,
        )
