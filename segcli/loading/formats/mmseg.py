"""mmsegmentation `.pth` checkpoints, read: one file, `{"state_dict": …, "meta": …}`, and the key table.

mmseg names ConvModule norms `bn` (`batch_norm` here, the Hub's layout) and the classifier `conv_seg`
(`classifier` here); backbone names are the same.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError
from . import pth

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


def read_pth(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an mmseg checkpoint ({'state_dict': ..., 'meta': ...} or a bare state dict), with
    mmseg's key names (`map_key` translates them)."""
    return pth.state_dict(path)


def read_with_meta(paths: list[Path], expects: str) -> tuple[dict[str, torch.Tensor], Any]:
    """segcli-named tensors of one mmseg checkpoint file and its `meta` (None when it has none; `expects`:
    what the architecture wants, for hints)."""
    if len(paths) != 1:
        raise CheckpointError(f"an mmsegmentation checkpoint is one file, {len(paths)} were given")
    obj = pth.load(paths[0])
    state = pth.rename(pth.state_dict(paths[0], obj), KEYS)
    if "decode_head.classifier.weight" not in state:
        raise CheckpointError(
            f"{paths[0]}: no decode_head.conv_seg.weight: not a segmentation checkpoint of the form mmseg writes",
            hint=expects,
        )
    return state, obj.get("meta") if isinstance(obj, dict) else None


def read(paths: list[Path], expects: str) -> dict[str, torch.Tensor]:
    """segcli-named tensors of one mmseg checkpoint file."""
    return read_with_meta(paths, expects)[0]
