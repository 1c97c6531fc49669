"""The PSPNet author's checkpoints (hszhao/semseg), read: `train_epoch_N.pth` = `{"epoch", "state_dict",
"optimizer"}`, keys prefixed `module.` (DataParallel). Only the state dict is used; the prefix and the
wrapper may also be absent.

`layer0` is the deep stem as one Sequential (indices 0, 1, 3, 4, 6, 7 — mmseg's `stem` indices), `ppm` the
pyramid pooling, `cls` the bottleneck + classifier, `aux` the auxiliary head on layer3.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ...errors import CheckpointError
from . import pth

KEYS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^module\."), ""),
    (re.compile(r"^layer0\.(\d+)\."), r"backbone.stem.\1."),
    (re.compile(r"^(layer[1-4]\.)"), r"backbone.\1"),
    (re.compile(r"^ppm\.features\.(\d+)\.1\."), r"decode_head.psp_modules.\1.1.conv."),
    (re.compile(r"^ppm\.features\.(\d+)\.2\."), r"decode_head.psp_modules.\1.1.batch_norm."),
    (re.compile(r"^cls\.0\."), "decode_head.bottleneck.conv."),
    (re.compile(r"^cls\.1\."), "decode_head.bottleneck.batch_norm."),
    (re.compile(r"^cls\.4\."), "decode_head.classifier."),
    (re.compile(r"^aux\.0\."), "auxiliary_head.convs.0.conv."),
    (re.compile(r"^aux\.1\."), "auxiliary_head.convs.0.batch_norm."),
    (re.compile(r"^aux\.4\."), "auxiliary_head.classifier."),
]


def read(paths: list[Path], head: str) -> dict[str, torch.Tensor]:
    """segcli-named tensors of one semseg `train_epoch_N.pth` (a PSPNet)."""
    if len(paths) != 1:
        raise CheckpointError(f"a semseg checkpoint is one file (train_epoch_N.pth), {len(paths)} were given")
    state = pth.state_dict(paths[0])
    if not any(k.removeprefix("module.").startswith("layer0.") for k in state):
        raise CheckpointError(
            f"{paths[0]}: not a semseg PSPNet checkpoint (no layer0.* stem keys)",
            hint="hszhao/semseg files hold {'epoch', 'state_dict', 'optimizer'} with module.layer0... keys",
        )
    return pth.rename(state, KEYS)
