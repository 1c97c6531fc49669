"""Safetensors loading with a strict key/shape report.

Every key of the file must be a key of the model and vice versa, with the same shape; the only keys
handled by rule rather than by equality are the *derived buffers* — values that are a fixed function of
the architecture, which some writers omit:

* `*.relative_position_index` (Swin): computed from the window size. When the file has it, it must equal
  the computed index (else the checkpoint was made for another window size); when absent, it is computed.
* `*.num_batches_tracked` (BatchNorm): a training counter that inference never reads; taken from the file
  when present, 0 otherwise.

The auxiliary FCN head (`auxiliary_head.*`) is not special: it is part of the model when the config says
so (`use_auxiliary_head`, the default), so its keys must be present and are loaded and shape-checked; it
only ever runs in `Segmentor.forward_aux`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, first_line
from ..fsutil import read_regular, require_regular

DERIVED_SUFFIXES = ("relative_position_index", "num_batches_tracked")
SHARD_NAME = re.compile(r"(?!\.)[A-Za-z0-9_.-]{1,200}\.safetensors")  # no folders, no '..', not hidden
MAX_INDEX_BYTES = 64 << 20
SHOW = 10  # keys listed per category in a mismatch report


def _looks_pickled(head: bytes) -> bool:
    """torch.save output: a zip archive (PK) or a bare pickle (protocol 2+: 0x80, then 2..5)."""
    return head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one .safetensors file, or a CheckpointError naming the file (truncated, not safetensors)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        require_regular(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read weights file ({e.strerror or e})") from None
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensors[key] = f.get_tensor(key)
        return tensors
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for truncated / corrupt headers
        reason = first_line(e)
    try:  # only a file safetensors rejected is examined further, so a valid one is never misjudged
        with open(path, "rb") as f:
            head = f.read(8)
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read weights file ({e.strerror or e})") from None
    if _looks_pickled(head):
        raise CheckpointError(
            f"{path}: this is a pickled PyTorch checkpoint, not safetensors; segcli never unpickles implicitly",
            hint="convert it once to model.safetensors (see the README, 'Checkpoints in other formats')",
        )
    raise CheckpointError(
        f"{path}: not a readable safetensors file ({reason}; {size} bytes)",
        hint="the file is truncated or corrupt: download it again (segcli download NAME --force)",
    )


def shard_names(index: Path) -> list[str]:
    """The shard files a model.safetensors.index.json lists: plain file names in its folder."""
    try:
        weight_map = json.loads(read_regular(Path(index), MAX_INDEX_BYTES))["weight_map"]
        names = sorted(set(weight_map.values()))
    except RecursionError:
        raise CheckpointError(f"{index}: not a readable safetensors index (nested too deeply)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index}: not a readable safetensors index ({first_line(e)})") from None
    for name in names:
        if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
            raise CheckpointError(
                f"{index}: shard name {str(name)[:80]!r} is not a file name in the index's folder",
                hint="an index lists shards as plain names such as model-00001-of-00002.safetensors",
            )
    return names


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file, or every shard listed by a model.safetensors.index.json."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        tensors: dict[str, torch.Tensor] = {}
        for shard in shard_names(path):
            tensors.update(read_safetensors(path.parent / shard))
        return tensors
    return read_safetensors(path)


def _cap(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOW])
    return shown + (f", … and {len(keys) - SHOW} more" if len(keys) > SHOW else "")


def match_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """The complete state dict to load into `model`, or a CheckpointError listing every discrepancy."""
    expected = model.state_dict()
    missing, conflicts, wrong_index = [], [], []
    unexpected = sorted(set(tensors) - set(expected))
    out: dict[str, torch.Tensor] = {}
    for key, ref in expected.items():
        derived = key.endswith(DERIVED_SUFFIXES)
        if key not in tensors:
            if not derived:
                missing.append(key)
            elif key.endswith("num_batches_tracked"):
                out[key] = torch.zeros((), dtype=torch.long)
            else:
                out[key] = ref.clone()  # computed at construction, on the CPU even for meta-built models
            continue
        t = tensors[key]
        if tuple(t.shape) != tuple(ref.shape):
            conflicts.append(f"{key} file {list(t.shape)} vs model {list(ref.shape)}")
            continue
        if key.endswith("relative_position_index") and not torch.equal(t.long(), ref.long()):
            wrong_index.append(key)
            continue
        if t.dtype.is_floating_point != ref.dtype.is_floating_point:
            conflicts.append(f"{key} file {t.dtype} vs model {ref.dtype}")
            continue
        out[key] = t
    if missing or unexpected or conflicts or wrong_index:
        counts = [
            f"{len(missing)} missing" if missing else "",
            f"{len(unexpected)} unexpected" if unexpected else "",
            f"{len(conflicts)} shape/dtype conflicts" if conflicts else "",
            f"{len(wrong_index)} relative_position_index for another window size" if wrong_index else "",
        ]
        details = [
            f"missing: {_cap(sorted(missing))}" if missing else "",
            f"unexpected: {_cap(unexpected)}" if unexpected else "",
            f"conflicts: {_cap(sorted(conflicts))}" if conflicts else "",
            f"window mismatch: {_cap(sorted(wrong_index))}" if wrong_index else "",
        ]
        raise CheckpointError(
            f"{where}: weights do not match the architecture ({', '.join(c for c in counts if c)}); "
            + "; ".join(d for d in details if d),
            hint="the config (or registry entry) describes a different model than these weights",
        )
    return out


def load_weights(model: nn.Module, path: Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load `path` into `model` (possibly built on the meta device) strictly; returns the model in `dtype`."""
    tensors = read_weights(path)
    state = match_state_dict(model, tensors, str(path))
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(
            f"{path}: {len(broken)} tensor(s) hold NaN or infinite values ({_cap(sorted(broken))})",
            hint="the file is corrupt or was saved from a diverged training run",
        )
    state = {k: v.to(dtype) if v.dtype.is_floating_point else v.long() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model
