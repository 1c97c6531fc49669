"""PyTorch `.pth` checkpoints, read safely: `torch.load(weights_only=True)` and nothing else.

Only tensors and plain containers are unpickled. A checkpoint whose pickle needs code to run (custom classes
in its metadata) is refused with an explanation — there is no fallback to full unpickling. The formats of
the three labs (`mmseg`, `csail`, `semseg`) read their files through here and differ in their key tables.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError, first_line
from ...fsutil import require_regular


def is_torchscript(path: Path) -> bool:
    """Whether `path` is a TorchScript archive (a zip with compiled code), not a checkpoint of weights."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 2)[1:2] == ["code"] or n.endswith("/constants.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile, IndexError):
        return False


def torchscript_error(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: a TorchScript archive (a compiled model, as `segcli export -f torchscript` writes), not a "
        "checkpoint of weights",
        hint="segcli runs TorchScript exports with the sidecar `segcli export` writes beside them (FILE.pt.json); "
        "otherwise run it with torch.jit.load",
    )


def load(path: Path) -> Any:
    """The unpickled object of a weights-only checkpoint, or a CheckpointError naming the file."""
    try:
        require_regular(path)
        if is_torchscript(path):
            raise torchscript_error(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "... is a zip archive (did you mean torch.jit.load?)"
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).strip().splitlines()
        culprit = next(
            (line for line in detail if "GLOBAL" in line or "Unsupported" in line), detail[0] if detail else ""
        )
        if "weights_only" in str(e) or "GLOBAL" in str(e) or "Unsupported" in str(e):
            raise CheckpointError(
                f"{path}: refusing to unpickle: the checkpoint holds objects that need code to run "
                f"({culprit.strip()[:160]}); segcli reads .pth files with torch.load(weights_only=True) only",
                hint="if you trust the file, re-save only its state_dict (plain tensors) with torch.save in the "
                "environment that made it, then convert that file",
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first_line(e, 160)})") from None
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any bytes reach the unpickler: text, truncated archives, other files
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({first_line(e, 160, typed=True)})",
            hint="the file may be truncated or not a checkpoint: download it again",
        ) from None


def state_dict(path: Path, obj: Any = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: `obj["state_dict"]` when there is one (mmseg, semseg), else `obj` itself
    (a bare state dict: CSAIL); a CheckpointError when that is not a non-empty dict of tensors."""
    obj = load(path) if obj is None else obj
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state_dict of tensors in this checkpoint")
    return state


def rename(state: dict[str, torch.Tensor], table: list[tuple[Any, str]]) -> dict[str, torch.Tensor]:
    """`state` with every key passed through the (pattern, replacement) table, in order."""
    out = {}
    for key, value in state.items():
        for pattern, repl in table:
            key = pattern.sub(repl, key)
        out[key] = value
    return out
