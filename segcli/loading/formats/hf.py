"""transformers' `UperNetForSemanticSegmentation` files: `config.json` and `preprocessor_config.json`, read.

What `save_pretrained` writes and the openmmlab Hub repositories hold. Module names in segcli follow the
same layout, so the weights need no key mapping; only the configs are translated here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...engine.presets import Protocol
from ...errors import ConfigError
from ...model.backbones import BackboneConfig, ConvNeXtConfig, SwinConfig
from ...model.heads.fcn import FCNHeadConfig
from ...model.heads.uper import UPerHeadConfig
from ...model.layers import check_activation
from ...model.segmentor import IMAGENET_MEAN, IMAGENET_STD, Normalization, SegmentorConfig
from ..info import ModelInfo, Origin
from .common import class_names, class_set, read_json, segcli_block
from .schema import CHANNELS, MEAN, POOL_SCALES, SCALE, STD, Bool, Either, Float, Int, List, Opt, Str, Table

DEPTHS = List(Int(1, 64), 1, 8)
BACKBONE = Table(
    {
        "model_type": Str(max_len=64),
        "depths": DEPTHS,
        "hidden_sizes": List(CHANNELS, 1, 8),
        "num_channels": Int(1, 16),
        "patch_size": Int(1, 64),
        "layer_scale_init_value": Float(0.0, 1e6),
        "hidden_act": Str(max_len=64),
        "embed_dim": Int(1, 4096),
        "num_heads": List(Int(1, 256), 1, 8),
        "window_size": Int(1, 64),
        "mlp_ratio": Float(0.0, 64.0, open_lo=True),
        "qkv_bias": Bool(),
        "layer_norm_eps": Float(0.0, 1.0),
        "use_absolute_embeddings": Bool(),
        "num_stages": Int(1, 16),
        "out_features": Opt(List(Str(max_len=32), 0, 16)),
        "out_indices": Opt(List(Int(0, 16), 0, 16)),
    }
)
CONFIG = Table(
    {
        "model_type": Opt(Str(max_len=64)),
        "use_timm_backbone": Opt(Bool()),
        "backbone_config": Opt(BACKBONE),
        "hidden_size": CHANNELS,
        "pool_scales": POOL_SCALES,
        "use_auxiliary_head": Bool(),
        "auxiliary_in_channels": Opt(CHANNELS),
        "auxiliary_channels": CHANNELS,
        "auxiliary_num_convs": Int(0, 8),
        "auxiliary_concat_input": Bool(),
    }
)
SIZE = Int(1, 8192)
PREPROCESSOR = Table(
    {
        "size": Either((SIZE, Table({"height": SIZE, "width": SIZE}, required=("height", "width")))),
        "do_resize": Bool(),
        "resample": Int(0, 5),
        "do_normalize": Bool(),
        "image_mean": MEAN,
        "image_std": STD,
        "do_rescale": Bool(),
        "rescale_factor": SCALE,
    }
)


def _ints(v: Any, where: str, key: str) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(i, int) for i in v):
        raise ConfigError(f"{where}: `{key}` must be a list of integers, got {v!r}")
    return tuple(v)


def _activation(bb: dict[str, Any], where: str) -> str:
    act = bb.get("hidden_act", "gelu")
    check_activation(act, f"{where}: backbone_config.hidden_act")
    return str(act)


def _convnext(bb: dict[str, Any], where: str, out: tuple[int, ...]) -> ConvNeXtConfig:
    depths = _ints(bb.get("depths", [3, 3, 9, 3]), where, "depths")
    if bb.get("num_stages", 4) != len(depths):
        raise ConfigError(f"{where}: backbone num_stages {bb['num_stages']} but {len(depths)} depths")
    return ConvNeXtConfig(
        depths=depths,
        widths=_ints(bb.get("hidden_sizes", [96, 192, 384, 768]), where, "hidden_sizes"),
        in_channels=bb.get("num_channels", 3),
        patch_size=bb.get("patch_size", 4),
        layer_scale=bb.get("layer_scale_init_value", 1e-6) > 0,
        act=_activation(bb, where),
        out_indices=out,
    )


def _swin(bb: dict[str, Any], where: str, out: tuple[int, ...]) -> SwinConfig:
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
        act=_activation(bb, where),
        out_indices=out,
    )


def stages_out(bb: dict[str, Any], where: str) -> tuple[int, ...]:
    """The stages (from 0) a transformers backbone config hands on, as its `out_features` / `out_indices` say
    (transformers' rule: both absent → the last stage only; `out_indices` count the stem as 0)."""
    n = len(bb.get("depths", [2, 2, 6, 2] if bb.get("model_type") == "swin" else [3, 3, 9, 3]))
    names = ["stem", *(f"stage{i}" for i in range(1, n + 1))]
    out, indices = bb.get("out_features"), bb.get("out_indices")
    if out is None:
        out = [names[i] for i in indices if 0 <= i < len(names)] if indices is not None else [names[-1]]
        if indices is not None and len(out) != len(indices):
            raise ConfigError(f"{where}: backbone out_indices {indices} name stages that do not exist ({names})")
    if not all(isinstance(f, str) and f in names for f in out) or not out:
        raise ConfigError(f"{where}: backbone out_features {out} must name stages of {names}")
    if "stem" in out:
        raise ConfigError(f"{where}: backbone out_features include the stem: not supported (stages only)")
    return tuple(names.index(f) - 1 for f in out)


BACKBONES: dict[str, Callable[[dict[str, Any], str, tuple[int, ...]], BackboneConfig]] = {
    "convnext": _convnext,
    "swin": _swin,
}


def backbone(bb: dict[str, Any], where: str) -> BackboneConfig:
    """The backbone of a `backbone_config` (ConvNeXt or Swin, with the stages it hands on)."""
    kind = bb.get("model_type")
    if kind not in BACKBONES:
        raise ConfigError(
            f"{where}: backbone model_type {kind!r} is not supported",
            hint="segcli runs UperNet on ConvNeXt and Swin backbones",
        )
    bb = BACKBONE.check(bb, where, "backbone_config")
    try:
        return BACKBONES[kind](bb, where, stages_out(bb, where))
    except ConfigError as e:
        raise ConfigError(e.message if e.message.startswith(where) else f"{where}: {e.message}") from None


def network(cfg: dict[str, Any], num_classes: int, where: str) -> SegmentorConfig:
    """The network of a transformers `UperNetForSemanticSegmentation` config.json."""
    cfg = CONFIG.check(cfg, where)
    if cfg.get("model_type") != "upernet":
        raise ConfigError(
            f"{where}: model_type {cfg.get('model_type')!r} is not supported",
            hint="segcli reads UperNetForSemanticSegmentation configs (model_type 'upernet')",
        )
    if cfg.get("use_timm_backbone") or cfg.get("backbone_config") is None:
        raise ConfigError(f"{where}: needs a `backbone_config` (timm / named backbones are not supported)")
    bb = backbone(cfg["backbone_config"], where)
    channels = bb.out_channels
    head = UPerHeadConfig(
        in_channels=channels,
        num_classes=num_classes,
        channels=cfg.get("hidden_size", 512),
        pool_scales=_ints(cfg.get("pool_scales", [1, 2, 3, 6]), where, "pool_scales"),
    )
    aux = None
    if cfg.get("use_auxiliary_head", True):
        if len(channels) < 3:  # transformers' auxiliary head reads the third map handed on
            raise ConfigError(
                f"{where}: use_auxiliary_head with {len(channels)} backbone outputs (the auxiliary head reads the third)",
                hint="transformers cannot build this model either: set use_auxiliary_head false or hand on 3 stages",
            )
        aux = FCNHeadConfig(
            in_channels=cfg.get("auxiliary_in_channels") or channels[2],
            num_classes=num_classes,
            channels=cfg.get("auxiliary_channels", 256),
            num_convs=cfg.get("auxiliary_num_convs", 1),
            concat_input=cfg.get("auxiliary_concat_input", False),
        )
    return SegmentorConfig(bb, head, aux)


def preprocessing(pre: dict[str, Any], where: str) -> tuple[Normalization, tuple[int, int]]:
    """Normalisation and input size of a SegformerImageProcessor-style preprocessor_config.json."""
    size = pre.get("size", {"height": 512, "width": 512})
    if isinstance(size, dict) and not {"height", "width"} <= size.keys():
        raise ConfigError(f"{where}: unsupported `size` {size!r}", hint="expected {'height': H, 'width': W}")
    pre = PREPROCESSOR.check(pre, where)
    size = pre.get("size", size)
    hw = (size, size) if isinstance(size, int) else (size["height"], size["width"])
    if pre.get("do_resize", True) is False:
        raise ConfigError(f"{where}: do_resize=false is not supported by the `hf` preset")
    if pre.get("resample", 2) != 2:
        raise ConfigError(f"{where}: resample={pre['resample']} — only bilinear (2) is supported")
    normalize = pre.get("do_normalize", True)
    mean = tuple(pre.get("image_mean", IMAGENET_MEAN)) if normalize else (0.0, 0.0, 0.0)
    std = tuple(pre.get("image_std", IMAGENET_STD)) if normalize else (1.0, 1.0, 1.0)
    scale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    return Normalization(mean, std, scale), hw


def arch_protocol(net: SegmentorConfig) -> Protocol:
    """The test protocol mmseg published a transformers UperNet's numbers with, from its architecture (what
    the registry says for the openmmlab checkpoints): ConvNeXt slides windows of its training crop (640 for
    the ImageNet-22k L / XL, widths from 192 up; else 512) with stride 2/3 of it; Swin runs the whole image."""
    bb = net.backbone
    if isinstance(bb, ConvNeXtConfig):
        crop = 640 if bb.widths[0] >= 192 else 512
        return Protocol(crop, "slide", crop * 2 // 3)
    return Protocol(512, "whole")


def read_info(
    cfg: dict[str, Any], config_path: Path, preprocessor: Path | None, name: str, origin: Origin
) -> ModelInfo:
    """ModelInfo of a `save_pretrained` directory (or the same files fetched from a Hub repository)."""
    where = str(config_path)
    names = class_names(cfg, where)
    net = network(cfg, len(names), where)
    size = (512, 512)
    if preprocessor is not None:
        norm, size = preprocessing(read_json(preprocessor), str(preprocessor))
        net = SegmentorConfig(net.backbone, net.decode_head, net.auxiliary_head, norm)
    classes = class_set(cfg, names, where)
    preset, protocol = segcli_block(cfg.get("segcli", {}), where)
    if "segcli" not in cfg:  # a plain transformers config: the protocol follows the architecture
        protocol = arch_protocol(net)
    return ModelInfo(name, net, classes, size, preset, origin, protocol)
