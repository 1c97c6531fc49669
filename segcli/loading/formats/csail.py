"""The UPerNet authors' checkpoints (CSAILVision/semantic-segmentation-pytorch, `mit_semseg`, and the unified
perceptual parser of CSAILVision/unifiedparsing), read.

Each model is two plain `state_dict` files, `encoder_epoch_N.pth` (the ResNet: deep stem `conv1/bn1`,
`conv2/bn2`, `conv3/bn3`, then `layer1..4`) and `decoder_epoch_N.pth` (`UPerNet` or `PPMDeepsup`), no prefix,
no wrapper. Their BatchNorm is a synchronized BN whose files also carry training bookkeeping
(`_tmp_running_mean`, `_tmp_running_var`, `_running_iter`; at eval it is a plain BatchNorm with eps 1e-5):
those three are dropped by an explicit rule, every other key must map onto the network.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ...errors import CheckpointError
from . import pth

SYNC_BN_EXTRAS = ("_tmp_running_mean", "_tmp_running_var", "_running_iter")

ENCODER: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^conv1\."), "backbone.stem.0."),
    (re.compile(r"^bn1\."), "backbone.stem.1."),
    (re.compile(r"^conv2\."), "backbone.stem.3."),
    (re.compile(r"^bn2\."), "backbone.stem.4."),
    (re.compile(r"^conv3\."), "backbone.stem.6."),
    (re.compile(r"^bn3\."), "backbone.stem.7."),
    (re.compile(r"^(layer[1-4]\.)"), r"backbone.\1"),
]
# decoder `upernet` (UPerNet, fpn_dim 512, no auxiliary head) → segcli's UPerHead (ppm_upsample_first)
UPERNET: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^ppm_conv\.(\d+)\.0\."), r"decode_head.psp_modules.\1.1.conv."),
    (re.compile(r"^ppm_conv\.(\d+)\.1\."), r"decode_head.psp_modules.\1.1.batch_norm."),
    (re.compile(r"^ppm_last_conv\.0\."), "decode_head.bottleneck.conv."),
    (re.compile(r"^ppm_last_conv\.1\."), "decode_head.bottleneck.batch_norm."),
    (re.compile(r"^fpn_in\.(\d+)\.0\."), r"decode_head.lateral_convs.\1.conv."),
    (re.compile(r"^fpn_in\.(\d+)\.1\."), r"decode_head.lateral_convs.\1.batch_norm."),
    (re.compile(r"^fpn_out\.(\d+)\.0\.0\."), r"decode_head.fpn_convs.\1.conv."),
    (re.compile(r"^fpn_out\.(\d+)\.0\.1\."), r"decode_head.fpn_convs.\1.batch_norm."),
    (re.compile(r"^conv_last\.0\.0\."), "decode_head.fpn_bottleneck.conv."),
    (re.compile(r"^conv_last\.0\.1\."), "decode_head.fpn_bottleneck.batch_norm."),
    (re.compile(r"^conv_last\.1\."), "decode_head.classifier."),
]
# decoder `ppm_deepsup` (PPMDeepsup) → segcli's PSPHead + the deep-supervision branch as the auxiliary head
PPM_DEEPSUP: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^ppm\.(\d+)\.1\."), r"decode_head.psp_modules.\1.1.conv."),
    (re.compile(r"^ppm\.(\d+)\.2\."), r"decode_head.psp_modules.\1.1.batch_norm."),
    (re.compile(r"^conv_last\.0\."), "decode_head.bottleneck.conv."),
    (re.compile(r"^conv_last\.1\."), "decode_head.bottleneck.batch_norm."),
    (re.compile(r"^conv_last\.4\."), "decode_head.classifier."),
    (re.compile(r"^cbr_deepsup\.0\."), "auxiliary_head.convs.0.conv."),
    (re.compile(r"^cbr_deepsup\.1\."), "auxiliary_head.convs.0.batch_norm."),
    (re.compile(r"^conv_last_deepsup\."), "auxiliary_head.classifier."),
]
# decoder `upernet` of unifiedparsing (UPerNet with scene / object / part / material heads) → segcli's UPPHead;
# ppm_conv, ppm_last_conv, fpn_in, fpn_out as in UPERNET; conv_fusion is the fusion conv
UPP: list[tuple[re.Pattern[str], str]] = [
    *UPERNET[:8],
    (re.compile(r"^conv_fusion\.0\."), "decode_head.fpn_bottleneck.conv."),
    (re.compile(r"^conv_fusion\.1\."), "decode_head.fpn_bottleneck.batch_norm."),
    (re.compile(r"^(scene|object|part|material)_head\.0\.0\."), r"decode_head.\1_head.0.conv."),
    (re.compile(r"^(scene|object|part|material)_head\.0\.1\."), r"decode_head.\1_head.0.batch_norm."),
    (re.compile(r"^(scene_head\.2|object_head\.1|part_head\.1|material_head\.1)\."), r"decode_head.\1."),
]
DECODERS = {"uper": UPERNET, "psp": PPM_DEEPSUP, "upp": UPP}


def _kind(path: Path, state: dict[str, torch.Tensor]) -> str:
    """ "encoder" or "decoder", from the keys; a CheckpointError for anything else."""
    if any(k.startswith("module.") for k in state) or any(k.startswith(("backbone.", "decode_head.")) for k in state):
        raise CheckpointError(
            f"{path}: not a CSAIL encoder or decoder (its keys have a 'module.' / 'backbone.' prefix: another "
            "lab's checkpoint)",
            hint="CSAIL models are two plain files, encoder_epoch_N.pth and decoder_epoch_N.pth",
        )
    if "conv1.weight" in state and any(k.startswith("layer4.") for k in state):
        return "encoder"
    if any(k.startswith(("conv_last", "ppm")) for k in state):
        return "decoder"
    raise CheckpointError(f"{path}: neither a CSAIL encoder (conv1, layer1..4) nor a decoder (ppm, conv_last)")


def drop_sync_bn_extras(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Without the synchronized BN's training bookkeeping (the one rule that removes keys)."""
    return {k: v for k, v in state.items() if not k.endswith(SYNC_BN_EXTRAS)}


def read(paths: list[Path], head: str) -> dict[str, torch.Tensor]:
    """segcli-named tensors of an encoder and a decoder file (either order) of a `head` ("uper" / "psp" /
    "upp") model."""
    if len(paths) != 2:
        raise CheckpointError(
            f"a CSAIL model is two files, encoder_epoch_N.pth and decoder_epoch_N.pth; {len(paths)} given",
            hint="give both files, in either order",
        )
    parts: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}
    for path in paths:
        state = pth.state_dict(path)
        kind = _kind(path, state)
        if kind in parts:
            raise CheckpointError(
                f"{parts[kind][0]} and {path} are both CSAIL {kind}s", hint="give one encoder and one decoder file"
            )
        parts[kind] = (path, drop_sync_bn_extras(state))
    encoder = pth.rename(parts["encoder"][1], ENCODER)
    decoder = pth.rename(parts["decoder"][1], DECODERS[head])
    return {**encoder, **decoder}
