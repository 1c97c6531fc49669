"""segcli's own model directory (`segcli/1`): `config.json` + `model.safetensors`, read and written here.

`segcli convert` (mmseg checkpoints) and `segcli export -f safetensors-fp16` write it; `--model DIR` reads it.
The config describes the network with the architecture tables of `segcli.arch` (the schema weights.toml
uses), the classes (`id2label`, `palette`), the default preset and protocol (`segcli` block), optionally the
preprocessing (`preprocess`), and where the weights came from (`source`)::

    {"format": "segcli/1", "architecture": "upernet" | "pspnet", "backbone": {...}, "head": {...},
     "id2label": {"0": "wall", ...}, "palette": [[R, G, B], ...],
     "preprocess": {"mean": [3], "std": [3], "scale": s, "size": [H, W], "bgr": b},  (optional)
     "head_classes": {"part" | "material" | "scene": {"names": [...], "palette": [...]}},  (upp only)
     "segcli": {"preset", "crop_size", "mode", "stride", "align_corners", "resize"},
     "source": {...}}

Written deterministically (sorted keys, one safetensors metadata key): the same input gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...engine.presets import Protocol
from ...errors import ConfigError
from ...fsutil import atomic_write_bytes
from ...model.segmentor import Normalization, SegmentorConfig
from ..classes import HEAD_SETS, ClassSet, class_set_for
from ..info import ModelInfo, Origin
from . import hf
from .arch import network_from_tables, tables_from_network
from .common import class_names, class_set, dump_json, protocol_block, read_json, segcli_block
from .schema import CLASS_NAME, MAX_CLASSES, MEAN, PALETTE, SCALE, STD, Bool, Int, List, Table

FORMAT = "segcli/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


PREPROCESS = Table(
    {"mean": MEAN, "std": STD, "scale": SCALE, "size": List(Int(1, 8192), 2, 2), "bgr": Bool()},
    required=("mean", "std"),
    closed=True,
)
HEAD_CLASSES = Table(
    {
        head: Table({"names": List(CLASS_NAME, 1, MAX_CLASSES), "palette": PALETTE}, ("names",), closed=True)
        for head in HEAD_SETS
    },
    closed=True,
)


def _preprocessing(pre: Any, where: str) -> tuple[Normalization, tuple[int, int]]:
    """`"preprocess": {"mean", "std", "scale", "size": [H, W], "bgr"}`."""
    pre = PREPROCESS.check(pre, where, "preprocess")
    h, w = pre.get("size", (512, 512))
    norm = Normalization(tuple(pre["mean"]), tuple(pre["std"]), pre.get("scale", 1 / 255), pre.get("bgr", False))
    return norm, (h, w)


def _head_classes(block: Any, net: SegmentorConfig, where: str) -> dict[str, ClassSet]:
    """`"head_classes"` of a upp model: one set per head, sized as the network's head says."""
    if net.arch != "upp":
        if block is not None:
            raise ConfigError(f"{where}: `head_classes` belongs to upp models only")
        return {}
    d = net.decode_head
    sizes = {"part": d.part_classes, "material": d.material_classes, "scene": d.scene_classes}  # type: ignore[union-attr]
    return head_classes(block, sizes, where)


def head_classes(block: Any, sizes: dict[str, int], where: str) -> dict[str, ClassSet]:
    """`"head_classes"` (a upp model directory's or export sidecar's): one set per head of `sizes` classes."""
    if block is None:
        raise ConfigError(f"{where}: a upp model needs `head_classes` (the part, material and scene names)")
    block = HEAD_CLASSES.check(block, where, "head_classes")
    out = {}
    for head, n in sizes.items():
        names = tuple(block.get(head, {}).get("names", ()))
        if len(names) != n:
            raise ConfigError(f"{where}: `head_classes.{head}.names` must list the head's {n} classes")
        try:
            out[head] = class_set_for(names, block[head].get("palette"))
        except ConfigError as e:
            raise ConfigError(f"{where}: `head_classes.{head}`: {e.message}") from None
    return out


def head_classes_json(head_sets: dict[str, ClassSet]) -> dict[str, Any]:
    """The inverse of `head_classes`."""
    return {
        head: {"names": list(c.classes), **({"palette": [list(p) for p in c.palette]} if head != "scene" else {})}
        for head, c in head_sets.items()
    }


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
    heads = _head_classes(cfg.get("head_classes"), net, where)
    preset, protocol = segcli_block(cfg.get("segcli", {}), where)
    return ModelInfo(name, net, classes, size, preset, origin, protocol, heads)


def write(
    out_dir: Path,
    tensors: dict[str, torch.Tensor],
    network: SegmentorConfig,
    classes: ClassSet,
    preset: str,
    protocol: Protocol,
    source: dict[str, Any],
    input_size: tuple[int, int] | None = None,
    head_sets: dict[str, ClassSet] | None = None,
) -> Path:
    """Write `tensors` (already in the dtype wanted) and the config describing them into `out_dir`.

    `input_size` given or a normalisation other than the default: the network's normalisation (and that
    size) are recorded (`preprocess`); without them a reader uses the defaults (ImageNet mean / std on 0..1,
    512×512), as for converted mmseg checkpoints. `head_sets`: a upp model's part, material, scene classes."""
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
    n = network.normalization
    if input_size is not None or n != Normalization():
        config["preprocess"] = {"mean": list(n.mean), "std": list(n.std), "scale": n.scale}
        config["preprocess"].update(
            {"size": list(input_size)} if input_size else {}, **({"bgr": True} if n.bgr else {})
        )
    if head_sets:
        config["head_classes"] = head_classes_json(head_sets)
    out_dir.mkdir(parents=True, exist_ok=True)
    # one metadata key only: safetensors writes metadata in hash-map order, which would vary between runs
    atomic_write_bytes(out_dir / WEIGHTS, save(dict(sorted(tensors.items())), metadata={"format": "pt"}))
    atomic_write_bytes(out_dir / CONFIG, dump_json(config, sort_keys=True))
    return out_dir
