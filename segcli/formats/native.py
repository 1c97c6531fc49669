"""segcli's own model directory (`segcli/1`): `config.json` + `model.safetensors`, read and written here.

`segcli convert` (mmseg checkpoints) and `segcli export -f safetensors-fp16` write it; `--model DIR` reads it.
The config describes the network with the architecture tables of `segcli.arch` (the schema weights.toml
uses), the classes (`id2label`, `palette`), the default preset and protocol (`segcli` block), optionally the
preprocessing (`preprocess`), and where the weights came from (`source`)::

    {"format": "segcli/1", "architecture": "upernet" | "pspnet", "backbone": {...}, "head": {...},
     "id2label": {"0": "wall", ...}, "palette": [[R, G, B], ...],
     "preprocess": {"mean": [3], "std": [3], "scale": s, "size": [H, W]},       (optional)
     "segcli": {"preset", "crop_size", "mode", "stride", "align_corners", "resize"},
     "source": {...}}

Written deterministically (sorted keys, one safetensors metadata key): the same input gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..arch import network_from_tables, tables_from_network
from ..classes import ClassSet
from ..errors import ConfigError
from ..fsutil import atomic_write_bytes
from ..info import ModelInfo, Origin
from ..model.segmentor import Normalization, SegmentorConfig
from ..presets import Protocol
from . import hf
from .common import class_names, class_set, dump_json, protocol_block, read_json, segcli_block
from .schema import MEAN, SCALE, STD, Int, List, Table

FORMAT = "segcli/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


PREPROCESS = Table(
    {"mean": MEAN, "std": STD, "scale": SCALE, "size": List(Int(1, 8192), 2, 2)}, required=("mean", "std"), closed=True
)


def _preprocessing(pre: Any, where: str) -> tuple[Normalization, tuple[int, int]]:
    """`"preprocess": {"mean", "std", "scale", "size": [H, W]}`."""
    pre = PREPROCESS.check(pre, where, "preprocess")
    h, w = pre.get("size", (512, 512))
    return Normalization(tuple(pre["mean"]), tuple(pre["std"]), pre.get("scale", 1 / 255)), (h, w)  # type: ignore[arg-type]


def read_info(
    cfg: dict[str, Any], config_path: Path, preprocessor: Path | None, name: str, origin: Origin
) -> ModelInfo:
    """ModelInfo of a directory `segcli convert` / `export` wrote (a preprocessor_config.json beside the
    config takes precedence over its `preprocess` block, as in a transformers directory)."""
    where = str(config_path)
    if cfg.get("format") != FORMAT:
        raise ConfigError(f"{where}: config format {cfg.get('format')!r} is not supported ({FORMAT} expected)")
    names = class_names(cfg, where)
    net = network_from_tables(cfg.get("backbone"), cfg.get("head"), len(names), where)
    size = (512, 512)
    if preprocessor is not None:
        norm, size = hf.preprocessing(read_json(preprocessor), str(preprocessor))
        net = SegmentorConfig(net.backbone, net.decode_head, net.auxiliary_head, norm)
    elif cfg.get("preprocess") is not None:
        norm, size = _preprocessing(cfg["preprocess"], where)
        net = SegmentorConfig(net.backbone, net.decode_head, net.auxiliary_head, norm)
    classes = class_set(cfg, names, where)
    preset, protocol = segcli_block(cfg.get("segcli", {}), where)
    return ModelInfo(name, net, classes, size, preset, origin, protocol)


def write(
    out_dir: Path,
    tensors: dict[str, torch.Tensor],
    network: SegmentorConfig,
    classes: ClassSet,
    preset: str,
    protocol: Protocol,
    source: dict[str, Any],
    input_size: tuple[int, int] | None = None,
) -> Path:
    """Write `tensors` (already in the dtype wanted) and the config describing them into `out_dir`.

    `input_size` given: the network's normalisation and that size are recorded (`preprocess`); without it a
    reader uses the defaults (ImageNet mean / std on 0..1, 512×512), as for converted mmseg checkpoints."""
    from safetensors.torch import save

    backbone, head = tables_from_network(network)
    config: dict[str, Any] = {
        "format": FORMAT,
        "architecture": network.arch,
        "backbone": backbone,
        "head": head,
        "id2label": {str(i): name for i, name in enumerate(classes.classes)},
        "palette": [[int(v) for v in c] for c in classes.palette],
        "segcli": protocol_block(preset, protocol),
        "source": source,
    }
    if input_size is not None:
        n = network.normalization
        config["preprocess"] = {"mean": list(n.mean), "std": list(n.std), "scale": n.scale, "size": list(input_size)}
    out_dir.mkdir(parents=True, exist_ok=True)
    # one metadata key only: safetensors writes metadata in hash-map order, which would vary between runs
    atomic_write_bytes(out_dir / WEIGHTS, save(dict(sorted(tensors.items())), metadata={"format": "pt"}))
    atomic_write_bytes(out_dir / CONFIG, dump_json(config, sort_keys=True))
    return out_dir
