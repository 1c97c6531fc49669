"""Model descriptions: what segcli needs to build, load and run a model, from any source.

`ModelInfo` is the one description every source resolves to (registry entry, Hub repository, local
directory). This module also reads the Hugging Face `config.json` / `preprocessor_config.json` that
transformers' `save_pretrained` writes for `UperNetForSemanticSegmentation`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .classes import ClassSet, class_set_for
from .errors import ConfigError
from .model.backbones import BackboneConfig, ConvNeXtConfig, SwinConfig
from .model.heads.fcn import FCNHeadConfig
from .model.heads.uper import UPerHeadConfig
from .model.segmentor import IMAGENET_MEAN, IMAGENET_STD, Normalization, SegmentorConfig
from .presets import MODES, PRESETS, Protocol

STAGES = ["stage1", "stage2", "stage3", "stage4"]


@dataclass(frozen=True)
class Origin:
    """Where the weights come from, recorded in every output for provenance."""

    kind: str  # "registry" | "hub" | "local"
    repo: str | None = None
    revision: str | None = None
    filename: str | None = None
    sha256: str | None = None
    path: str | None = None  # local directory or file


@dataclass(frozen=True)
class ModelInfo:
    name: str
    network: SegmentorConfig
    class_set: ClassSet
    input_size: tuple[int, int] = (512, 512)  # (H, W) the `hf` preset resizes to (preprocessor_config.json)
    default_preset: str = "hf"
    origin: Origin = field(default_factory=lambda: Origin("local"))
    protocol: Protocol = field(default_factory=Protocol)  # what the `mmseg` presets use

    @property
    def classes(self) -> tuple[str, ...]:
        return self.class_set.classes


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def _ints(v: Any, where: str, key: str) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(i, int) for i in v):
        raise ConfigError(f"{where}: `{key}` must be a list of integers, got {v!r}")
    return tuple(v)


def _backbone_from_hf(bb: dict[str, Any], where: str) -> BackboneConfig:
    kind = bb.get("model_type")
    out = bb.get("out_features")
    if out is None and bb.get("out_indices") is not None:
        out = [f"stage{i}" for i in bb["out_indices"]]
    if out is not None and list(out) != STAGES:
        raise ConfigError(
            f"{where}: backbone out_features {out} — UPerNet needs all four stages {STAGES}",
        )
    if kind == "convnext":
        if bb.get("num_stages", 4) != 4:
            raise ConfigError(f"{where}: ConvNeXt with {bb['num_stages']} stages is not supported (4 expected)")
        return ConvNeXtConfig(
            depths=_ints(bb.get("depths", [3, 3, 9, 3]), where, "depths"),
            widths=_ints(bb.get("hidden_sizes", [96, 192, 384, 768]), where, "hidden_sizes"),
            in_channels=bb.get("num_channels", 3),
            patch_size=bb.get("patch_size", 4),
            layer_scale=bb.get("layer_scale_init_value", 1e-6) > 0,
            act=bb.get("hidden_act", "gelu"),
        )
    if kind == "swin":
        if bb.get("use_absolute_embeddings", False):
            raise ConfigError(f"{where}: Swin with absolute position embeddings is not supported")
        return SwinConfig(
            embed_dim=bb.get("embed_dim", 96),
            depths=_ints(bb.get("depths", [2, 2, 6, 2]), where, "depths"),
            num_heads=_ints(bb.get("num_heads", [3, 6, 12, 24]), where, "num_heads"),
            window_size=bb.get("window_size", 7),
            mlp_ratio=float(bb.get("mlp_ratio", 4.0)),
            qkv_bias=bb.get("qkv_bias", True),
            in_channels=bb.get("num_channels", 3),
            patch_size=bb.get("patch_size", 4),
            eps=float(bb.get("layer_norm_eps", 1e-5)),
            act=bb.get("hidden_act", "gelu"),
        )
    raise ConfigError(
        f"{where}: backbone model_type {kind!r} is not supported",
        hint="segcli runs UperNet on ConvNeXt and Swin backbones",
    )


def class_names_from_hf(cfg: dict[str, Any], where: str) -> tuple[str, ...]:
    id2label = cfg.get("id2label")
    if not id2label:
        n = cfg.get("num_labels", 150)
        return tuple(f"class_{i}" for i in range(n))
    try:
        labels = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError, AttributeError):
        raise ConfigError(f"{where}: id2label must map integer ids to names") from None
    if sorted(labels) != list(range(len(labels))):
        raise ConfigError(f"{where}: id2label ids must be 0..{len(labels) - 1} without gaps")
    return tuple(labels[i] for i in range(len(labels)))


def network_from_hf(cfg: dict[str, Any], num_classes: int, where: str) -> SegmentorConfig:
    """The network of a transformers `UperNetForSemanticSegmentation` config.json."""
    if cfg.get("model_type") != "upernet":
        raise ConfigError(
            f"{where}: model_type {cfg.get('model_type')!r} is not supported",
            hint="segcli reads UperNetForSemanticSegmentation configs (model_type 'upernet')",
        )
    if cfg.get("use_timm_backbone") or cfg.get("backbone_config") is None:
        raise ConfigError(f"{where}: needs a `backbone_config` (timm / named backbones are not supported)")
    backbone = _backbone_from_hf(cfg["backbone_config"], where)
    channels = backbone.out_channels
    head = UPerHeadConfig(
        in_channels=channels,
        num_classes=num_classes,
        channels=cfg.get("hidden_size", 512),
        pool_scales=_ints(cfg.get("pool_scales", [1, 2, 3, 6]), where, "pool_scales"),
    )
    aux = None
    if cfg.get("use_auxiliary_head", True):
        aux = FCNHeadConfig(
            in_channels=cfg.get("auxiliary_in_channels") or channels[2],
            num_classes=num_classes,
            channels=cfg.get("auxiliary_channels", 256),
            num_convs=cfg.get("auxiliary_num_convs", 1),
            concat_input=cfg.get("auxiliary_concat_input", False),
        )
    return SegmentorConfig(backbone, head, aux)


def preprocess_from_hf(pre: dict[str, Any], where: str) -> tuple[Normalization, tuple[int, int]]:
    """Normalisation and input size of a SegformerImageProcessor-style preprocessor_config.json."""
    size = pre.get("size", {"height": 512, "width": 512})
    if isinstance(size, int):
        hw = (size, size)
    elif isinstance(size, dict) and {"height", "width"} <= size.keys():
        hw = (int(size["height"]), int(size["width"]))
    else:
        raise ConfigError(f"{where}: unsupported `size` {size!r}", hint="expected {'height': H, 'width': W}")
    if pre.get("do_resize", True) is False:
        raise ConfigError(f"{where}: do_resize=false is not supported by the `hf` preset")
    if pre.get("resample", 2) != 2:
        raise ConfigError(f"{where}: resample={pre['resample']} — only bilinear (2) is supported")
    mean = tuple(pre.get("image_mean", IMAGENET_MEAN)) if pre.get("do_normalize", True) else (0.0, 0.0, 0.0)
    std = tuple(pre.get("image_std", IMAGENET_STD)) if pre.get("do_normalize", True) else (1.0, 1.0, 1.0)
    scale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{where}: image_mean and image_std need three values (RGB)")
    return Normalization(mean, std, scale), hw  # type: ignore[arg-type]


def preprocess_from_native(pre: Any, where: str) -> tuple[Normalization, tuple[int, int]]:
    """`"preprocess": {"mean", "std", "scale", "size": [H, W]}` of a segcli config.json."""
    try:
        mean, std = tuple(float(v) for v in pre["mean"]), tuple(float(v) for v in pre["std"])
        h, w = (int(v) for v in pre.get("size", (512, 512)))
        scale = float(pre.get("scale", 1 / 255))
    except (TypeError, KeyError, ValueError):
        raise ConfigError(f"{where}: `preprocess` needs mean [3], std [3], optional scale and size [H, W]") from None
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{where}: preprocess mean and std need three values (RGB)")
    return Normalization(mean, std, scale), (h, w)  # type: ignore[arg-type]


def info_from_dir(
    config_path: Path, preprocessor_path: Path | None, name: str, origin: Origin
) -> ModelInfo:
    """ModelInfo of a `save_pretrained` directory (or the same files fetched from a Hub repository), or of
    a directory `segcli convert` wrote (config.json with "format": "segcli/1")."""
    cfg = read_json(config_path)
    names = class_names_from_hf(cfg, str(config_path))
    if cfg.get("format") == "segcli/1":
        from .arch import network_from_tables

        network = network_from_tables(cfg.get("backbone"), cfg.get("head"), len(names), str(config_path))
    elif "format" in cfg:
        raise ConfigError(f"{config_path}: config format {cfg['format']!r} is not supported (segcli/1 expected)")
    else:
        network = network_from_hf(cfg, len(names), str(config_path))
    size = (512, 512)
    if preprocessor_path is not None:
        norm, size = preprocess_from_hf(read_json(preprocessor_path), str(preprocessor_path))
        network = SegmentorConfig(network.backbone, network.decode_head, network.auxiliary_head, norm)
    elif cfg.get("preprocess") is not None:  # segcli's own format keeps it in config.json
        norm, size = preprocess_from_native(cfg["preprocess"], str(config_path))
        network = SegmentorConfig(network.backbone, network.decode_head, network.auxiliary_head, norm)
    try:
        classes = class_set_for(names, cfg.get("palette"))
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e.message}") from None
    preset, protocol = segcli_block(cfg.get("segcli", {}), str(config_path))
    return ModelInfo(name, network, classes, size, preset, origin, protocol)


def segcli_block(block: Any, where: str) -> tuple[str, Protocol]:
    """Optional `"segcli": {"preset", "crop_size", "mode", "stride", "align_corners", "resize"}` of a config.json
    (written by `segcli convert`): the default preset and the evaluation protocol."""
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: `segcli` must be an object")
    unknown = sorted(set(block) - {"preset", "crop_size", "mode", "stride", "align_corners", "resize"})
    if unknown:
        raise ConfigError(f"{where}: unknown `segcli` field(s) {', '.join(unknown)}")
    mode = block.get("mode", "whole")
    if mode not in MODES:
        raise ConfigError(f"{where}: segcli.mode must be whole or slide, got {mode!r}")
    preset = str(block.get("preset", "hf"))
    if preset not in PRESETS:
        raise ConfigError(f"{where}: segcli.preset {preset!r} is not a preset ({', '.join(PRESETS)})")
    proto = Protocol(int(block.get("crop_size", 512)), mode, block.get("stride"),
                     bool(block.get("align_corners", False)), block.get("resize"))  # fmt: skip
    return preset, proto
