"""Architecture tables ↔ network configs.

The same small schema describes a network in weights.toml entries and in the config.json that
`segcli convert` writes:

    backbone = {type = "convnext" | "swin" | "resnet", <that config's fields>}
    head     = {type = "uper" | "psp" | "upp", channels, pool_scales, align_corners, ppm_upsample_first (uper),
                auxiliary, aux_in_channels, aux_channels, aux_num_convs, aux_concat_input, aux_out_channels,
                threshold (a binary head: one logit, label 1 where its sigmoid exceeds it),
                material_classes, scene_classes, part_classes, part_groups = [{object, parts}, ...] (upp)}

`upp` is the unified perceptual parser: the UPerNet trunk (precise RoI pooling in its PPM) with object,
material, part and scene heads; `part_groups` lists, in the part head's channel order, each object that
has parts and the global part label of each of its channels.

Variants are data: ConvNeXt-T and -XL, or PSPNet R50-D8 and UPerNet R101, differ only in these numbers.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ...engine.heads import Heads, PartGroup
from ...errors import ConfigError
from ...model.backbones import BackboneConfig, ConvNeXtConfig, ResNetConfig, SwinConfig
from ...model.heads.fcn import FCNHeadConfig
from ...model.heads.psp import PSPHeadConfig
from ...model.heads.uper import UPerHeadConfig
from ...model.heads.upp import UPPHeadConfig
from ...model.segmentor import SegmentorConfig
from .schema import CHANNELS, MAX_CLASSES, POOL_SCALES, Bool, Check, Float, Int, List, Opt, Str, Table, field_names

BACKBONE_TYPES: dict[str, type] = {"convnext": ConvNeXtConfig, "swin": SwinConfig, "resnet": ResNetConfig}
HEAD_OF_ARCH = {"pspnet": "psp", "upernet": "uper", "upp": "upp"}  # Segmentor.arch → its head table's type
HEAD_TYPES = tuple(HEAD_OF_ARCH.values())
UPP_KEYS = {"material_classes", "scene_classes", "part_classes", "part_groups"}
HEAD_KEYS = UPP_KEYS | {
    "type",
    "channels",
    "pool_scales",
    "align_corners",
    "auxiliary",
    "aux_in_channels",
    "aux_channels",
    "aux_num_convs",
    "aux_concat_input",
    "aux_out_channels",
    "ppm_upsample_first",
    "threshold",
}


STAGE_INTS = List(Int(1, 64), 1, 8)
# bounds of every backbone field any backbone type has (checked before a config is built)
BACKBONE_FIELDS: dict[str, Check] = {
    "depths": STAGE_INTS,
    "widths": List(CHANNELS, 1, 8),
    "in_channels": Int(1, 16),
    "patch_size": Int(1, 64),
    "layer_scale": Bool(),
    "act": Str(max_len=64),
    "embed_dim": Int(1, 4096),
    "num_heads": List(Int(1, 256), 1, 8),
    "window_size": Int(1, 64),
    "mlp_ratio": Float(0.0, 64.0, open_lo=True),
    "qkv_bias": Bool(),
    "eps": Float(0.0, 1.0),
    "depth": Int(18, 152, choices=(18, 34, 50, 101, 152)),
    "strides": List(Int(1, 4), 4, 4),
    "dilations": List(Int(1, 16), 4, 4),
    "contract_dilation": Bool(),
    "stem_channels": CHANNELS,
    "blocks": Opt(List(Int(1, 64), 4, 4)),
    "dilate_conv2": Bool(),
    "out_indices": Opt(List(Int(0, 7), 1, 8)),
    "multi_grid": Opt(List(Int(1, 16), 1, 64)),
}
HEAD = Table(
    {
        "type": Str(choices=HEAD_TYPES),
        "channels": CHANNELS,
        "pool_scales": POOL_SCALES,
        "align_corners": Bool(),
        "auxiliary": Bool(),
        "aux_in_channels": CHANNELS,
        "aux_channels": CHANNELS,
        "aux_num_convs": Int(0, 8),
        "aux_concat_input": Bool(),
        "aux_out_channels": Int(1, MAX_CLASSES),
        "threshold": Float(0.0, 1.0),
        "ppm_upsample_first": Bool(),
        "material_classes": Int(1, MAX_CLASSES),
        "scene_classes": Int(1, MAX_CLASSES),
        "part_classes": Int(1, MAX_CLASSES),
        "part_groups": List(
            Table(
                {"object": Int(0, MAX_CLASSES - 1), "parts": List(Int(0, MAX_CLASSES - 1), 1, 1024)},
                ("object", "parts"),
                closed=True,
            ),
            1,
            4096,
        ),
    }
)


def backbone_from_table(table: Any, where: str) -> BackboneConfig:
    if not isinstance(table, dict) or table.get("type") not in BACKBONE_TYPES:
        raise ConfigError(f"{where}: `backbone` needs type = {' | '.join(map(repr, BACKBONE_TYPES))}")
    cls = BACKBONE_TYPES[table["type"]]
    args = {k: v for k, v in table.items() if k != "type"}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown backbone field(s) {field_names(unknown)}", hint=f"known: {sorted(known)}")
    args = {
        k: BACKBONE_FIELDS[k].check(v, where, f"backbone.{k}") if k in BACKBONE_FIELDS else v for k, v in args.items()
    }
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    try:
        return cls(**args)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: invalid backbone ({e})") from None


def network_from_tables(backbone: Any, head: Any, num_classes: int, where: str) -> SegmentorConfig:
    """The network a `backbone` and a `head` table describe, with `num_classes` outputs."""
    bb = backbone_from_table(backbone, where)
    head = head or {}
    if not isinstance(head, dict):
        raise ConfigError(f"{where}: `head` must be a table")
    unknown = sorted(set(head) - HEAD_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown head field(s) {field_names(unknown)}", hint=f"known: {sorted(HEAD_KEYS)}")
    kind = head.get("type", "uper")
    if kind not in HEAD_TYPES:
        raise ConfigError(f"{where}: head type must be {', '.join(HEAD_TYPES)}, got {kind!r}")
    head = HEAD.check(head, where, "head")
    ch = bb.out_channels
    width, scales = head.get("channels", 512), tuple(head.get("pool_scales", (1, 2, 3, 6)))
    ac = bool(head.get("align_corners", False))
    if kind == "upp":
        return SegmentorConfig(bb, _upp_head(head, ch, num_classes, width, scales, ac, where))
    if set(head) & UPP_KEYS:
        raise ConfigError(f"{where}: {', '.join(sorted(set(head) & UPP_KEYS))} apply to the upp head only")
    threshold = head.get("threshold")
    if threshold is not None and num_classes != 2:
        raise ConfigError(f"{where}: a binary head (threshold) labels 2 classes, not {num_classes}")
    out = 1 if threshold is not None else num_classes  # the classifier's channels
    if kind == "uper":
        upsample_first = bool(head.get("ppm_upsample_first", False))
        decode: UPerHeadConfig | PSPHeadConfig = UPerHeadConfig(
            ch, out, width, scales, ac, upsample_first, threshold=threshold
        )
    else:
        if head.get("ppm_upsample_first"):
            raise ConfigError(f"{where}: ppm_upsample_first applies to the uper head only")
        decode = PSPHeadConfig(ch[-1], out, width, scales, ac, threshold=threshold)
    aux = None
    if head.get("auxiliary", True):
        aux = FCNHeadConfig(
            head.get("aux_in_channels", ch[2]),
            head.get("aux_out_channels", out),
            head.get("aux_channels", 256),
            head.get("aux_num_convs", 1),
            bool(head.get("aux_concat_input", False)),
        )
    return SegmentorConfig(bb, decode, aux)


def _upp_head(
    head: dict[str, Any],
    ch: tuple[int, ...],
    num_classes: int,
    width: int,
    scales: tuple[int, ...],
    ac: bool,
    where: str,
) -> UPPHeadConfig:
    missing = sorted(UPP_KEYS - set(head))
    if missing:
        raise ConfigError(f"{where}: the upp head needs {', '.join(missing)}")
    aux = sorted({"aux_in_channels", "aux_channels", "aux_num_convs", "aux_concat_input"} & set(head))
    if head.get("auxiliary") or aux or head.get("ppm_upsample_first") is False:
        raise ConfigError(
            f"{where}: the upp head has no auxiliary head and always upsamples first in its PPM",
            hint=f"leave out {', '.join(aux) or 'auxiliary / ppm_upsample_first'}",
        )
    groups = tuple(PartGroup(g["object"], tuple(g["parts"])) for g in head["part_groups"])
    objects = [g.object_label for g in groups]
    if len(set(objects)) != len(objects) or max(objects) >= num_classes:
        raise ConfigError(f"{where}: `head.part_groups` objects must be distinct labels below {num_classes}")
    if max(p for g in groups for p in g.parts) >= head["part_classes"]:
        raise ConfigError(f"{where}: `head.part_groups` parts must be labels below part_classes")
    if sum(len(g.parts) for g in groups) > MAX_CLASSES:
        raise ConfigError(f"{where}: `head.part_groups` give more than {MAX_CLASSES} part channels")
    return UPPHeadConfig(
        ch,
        num_classes,
        groups,
        head["part_classes"],
        head["material_classes"],
        head["scene_classes"],
        width,
        scales,
        ac,
    )


def parser_heads(head: Any, num_classes: int, where: str) -> Heads:
    """The channel layout of a upp `head` table (an export's sidecar: no network to build)."""
    if not isinstance(head, dict) or head.get("type") != "upp":
        raise ConfigError(f"{where}: `head` must be a upp head table")
    return _upp_head(HEAD.check(head, where, "head"), (1, 1, 1, 1), num_classes, 1, (1,), False, where).heads


def tables_from_network(net: SegmentorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The inverse of `network_from_tables` (what `segcli convert` writes into config.json)."""
    bb = net.backbone
    kind = next(name for name, cls in BACKBONE_TYPES.items() if isinstance(bb, cls))
    backbone = {
        "type": kind,
        **{f.name: list(v) if isinstance(v := getattr(bb, f.name), tuple) else v for f in fields(bb)},
    }
    d = net.decode_head
    head: dict[str, Any] = {
        "type": HEAD_OF_ARCH[net.arch],
        "channels": d.channels,
        "pool_scales": list(d.pool_scales),
        "align_corners": d.align_corners,
    }
    if isinstance(d, UPPHeadConfig):
        groups = [{"object": g.object_label, "parts": list(g.parts)} for g in d.part_groups]
        head.update(material_classes=d.material_classes, scene_classes=d.scene_classes)
        head.update(part_classes=d.part_classes, part_groups=groups, auxiliary=False)
        return backbone, head
    if isinstance(d, UPerHeadConfig) and d.ppm_upsample_first:  # written only when set: older configs unchanged
        head["ppm_upsample_first"] = True
    a = net.auxiliary_head
    head["auxiliary"] = a is not None
    if a is not None:
        head.update(aux_in_channels=a.in_channels, aux_channels=a.channels, aux_num_convs=a.num_convs)
        if a.concat_input:  # written only when set: older configs unchanged
            head["aux_concat_input"] = True
        if a.num_classes != d.num_classes:
            head["aux_out_channels"] = a.num_classes
    if d.threshold is not None:  # a binary head (written only when set)
        head["threshold"] = d.threshold
    return backbone, head
