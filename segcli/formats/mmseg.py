"""mmsegmentation `.pth` checkpoints, read: `torch.load(weights_only=True)` and the key table to segcli's names.

Only tensors and plain containers are unpickled. A checkpoint whose pickle needs code to run (custom classes
in its metadata) is refused with an explanation — there is no fallback to full unpickling.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..fsutil import require_regular

# mmseg name → segcli name: ConvModule norms are `bn` in mmseg and `batch_norm` here (the Hub's layout);
# the classifier is `conv_seg` there. Backbone names are the same.
KEYS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^module\."), ""),  # saved from a DataParallel wrapper
    (re.compile(r"^(decode_head|auxiliary_head)\.conv_seg\."), r"\1.classifier."),
    (
        re.compile(
            r"^(decode_head|auxiliary_head)\.(.+)\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
        ),
        r"\1.\2.batch_norm.\3",
    ),
]


def map_key(key: str) -> str:
    for pattern, repl in KEYS:
        key = pattern.sub(repl, key)
    return key


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def read_pth(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an mmseg checkpoint ({'state_dict': ..., 'meta': ...} or a bare state dict), with
    mmseg's key names (`map_key` translates them)."""
    try:
        require_regular(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
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
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({_first_line(e)})",
            hint="the file may be truncated: download it again",
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state_dict of tensors in this checkpoint")
    return state
