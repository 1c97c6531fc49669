"""mmsegmentation .pth checkpoints → segcli model directories (model.safetensors + config.json).

Reading is `formats.mmseg` (weights-only unpickling, the key table), writing `formats.native`; in between,
every key and shape is checked against the architecture the registry entry describes. The output is
deterministic: converting the same file twice gives identical bytes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ._version import __version__
from .arch import network_from_tables, tables_from_network
from .checkpoint import match_state_dict
from .classes import ClassSet, derived_palette, known_set
from .errors import CheckpointError, ConfigError
from .formats import mmseg, native
from .hub import file_sha256
from .model import Segmentor
from .registry import ModelSpec


def _class_set(src: Path, spec: ModelSpec, k: int, classes: tuple[str, ...] | None) -> ClassSet:
    """The registry entry's dataset classes, or the names given, checked against the checkpoint's K."""
    if classes is None:
        dataset = known_set(spec.dataset)
        if k != len(dataset.classes):
            raise ConfigError(
                f"{src}: the checkpoint has {k} classes, {spec.dataset} has {len(dataset.classes)}",
                hint="give the class names with --classes FILE (JSON list or one name per line)",
            )
        return dataset
    if len(classes) != k:
        raise ConfigError(f"{src}: the checkpoint has {k} classes but {len(classes)} names were given")
    return ClassSet("custom", classes, derived_palette(k))


def convert(src: Path, spec: ModelSpec, out_dir: Path, classes: tuple[str, ...] | None = None) -> Path:
    """Convert `src` (an mmseg checkpoint of the architecture `spec` describes) into `out_dir`."""
    state = {mmseg.map_key(k): v for k, v in mmseg.read_pth(src).items()}
    cls_w = state.get("decode_head.classifier.weight")
    if cls_w is None:
        raise CheckpointError(
            f"{src}: no decode_head.conv_seg.weight: not a segmentation checkpoint of the form mmseg writes",
            hint=f"--arch {spec.name} expects an mmsegmentation {spec.network.arch} checkpoint",
        )
    k = int(cls_w.shape[0])
    class_set = _class_set(src, spec, k, classes)
    backbone, head = tables_from_network(spec.network)
    network = network_from_tables(backbone, head, k, f"--arch {spec.name}")
    with torch.device("meta"):
        model = Segmentor(network)
    checked = match_state_dict(model, state, f"{src} as --arch {spec.name}")
    tensors = {
        key: t.detach().to(torch.float32 if t.is_floating_point() else torch.int64).contiguous()
        for key, t in checked.items()
    }
    source = {
        "file": src.name,
        "sha256": file_sha256(src, quiet=True),
        "arch": spec.name,
        "converted_by": f"segcli {__version__}",
        "license": spec.license,
    }
    return native.write(out_dir, tensors, network, class_set, spec.preset, spec.evaluation, source)
