"""What an mmsegmentation checkpoint says about itself: the training config it carries (mmengine 1.x:
`meta["cfg"]`; mmseg 0.x: `meta["config"]`, both the config's text, read as data by `pyconfig`) and its
classes (`meta["dataset_meta"]`, or 0.x's `meta["CLASSES"]` / `meta["PALETTE"]`).

`describe` turns that config into segcli's network description, field by field, the way mmseg computes it:
ResNetV1c (deep stem, `contract_dilation`, `multi_grid`, mmseg's basic block), PSPHead / UPerHead, an
FCNHead auxiliary head, the data preprocessor's mean / std / channel order, the test mode and window. A field
that changes the computation and that segcli does not compute is refused by name; fields that only matter for
training (losses, dropout, frozen stages, checkpointing) are passed over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...engine.presets import Protocol
from ...errors import ConfigError
from ...model.backbones import ResNetConfig
from ...model.heads.fcn import FCNHeadConfig
from ...model.heads.psp import PSPHeadConfig
from ...model.heads.uper import UPerHeadConfig
from ...model.segmentor import Normalization, SegmentorConfig
from . import pyconfig

TRAINING_ONLY = {  # fields that do not change what a trained network computes at inference
    "type", "init_cfg", "pretrained", "norm_eval", "frozen_stages", "with_cp", "zero_init_residual", "dropout_ratio",
    "loss_decode", "ignore_index", "sampler", "train_cfg", "conv_cfg", "norm_cfg", "act_cfg", "in_index",
}  # fmt: skip
BN_TYPES = ("BN", "SyncBN", "BN2d")


@dataclass(frozen=True)
class Described:
    """A checkpoint's network, classes and test protocol, as its own config and metadata say."""

    network: SegmentorConfig
    classes: tuple[str, ...] | None  # None: the metadata names none
    palette: list[Any] | None
    protocol: Protocol


def config_text(meta: Any) -> str | None:
    """The config text of a checkpoint's `meta` (None when it carries none)."""
    if not isinstance(meta, dict):
        return None
    for key in ("cfg", "config"):
        if isinstance(meta.get(key), str):
            return str(meta[key])
    return None


def _refuse(where: str, field: str, value: Any, why: str = "segcli does not compute it") -> ConfigError:
    return ConfigError(
        f"{where}: the checkpoint's config sets {field} = {value!r}: {why}",
        hint="this network cannot be converted as it was trained; nothing was written",
    )


def _check_fields(table: dict[str, Any], known: set[str], where: str, what: str) -> None:
    for key in sorted(set(table) - known - TRAINING_ONLY):
        raise _refuse(where, f"{what}.{key}", table[key])
    norm = table.get("norm_cfg") or {}
    if isinstance(norm, dict) and (norm.get("type", "BN") not in BN_TYPES or norm.get("eps", 1e-5) != 1e-5):
        raise _refuse(where, f"{what}.norm_cfg", norm, "segcli computes BatchNorm with eps 1e-5")
    act = table.get("act_cfg") or {"type": "ReLU"}
    if isinstance(act, dict) and act.get("type") != "ReLU":
        raise _refuse(where, f"{what}.act_cfg", act, "segcli's heads use ReLU")
    if table.get("conv_cfg") not in (None, {"type": "Conv2d"}, {"type": "Conv"}):
        raise _refuse(where, f"{what}.conv_cfg", table["conv_cfg"])


def _backbone(b: dict[str, Any], where: str) -> ResNetConfig:
    kind = str(b.get("type"))
    stems = {"ResNetV1c": (True, False), "ResNetV1d": (True, True), "ResNet": (False, False)}
    if kind not in stems:
        raise _refuse(where, "model.backbone.type", kind, "segcli converts mmseg's ResNet backbones (ResNetV1c)")
    deep, avg = b.get("deep_stem", stems[kind][0]), b.get("avg_down", stems[kind][1])
    if not deep or avg:
        raise _refuse(where, "model.backbone", {"deep_stem": deep, "avg_down": avg}, "segcli computes ResNetV1c")
    known = {"depth", "in_channels", "stem_channels", "base_channels", "num_stages", "strides", "dilations"}
    known |= {"out_indices", "style", "deep_stem", "avg_down", "dcn", "stage_with_dcn", "plugins", "multi_grid"}
    known |= {"contract_dilation"}
    _check_fields(b, known, where, "model.backbone")
    for field, want in (("base_channels", 64), ("num_stages", 4), ("style", "pytorch"), ("dcn", None)):
        if b.get(field, want) != want:
            raise _refuse(where, f"model.backbone.{field}", b[field])
    if b.get("plugins"):
        raise _refuse(where, "model.backbone.plugins", b["plugins"])
    if tuple(b.get("out_indices", (0, 1, 2, 3))) != (0, 1, 2, 3):
        raise _refuse(where, "model.backbone.out_indices", b["out_indices"], "the heads read all four stages")
    grid = b.get("multi_grid")
    try:
        return ResNetConfig(
            depth=int(b.get("depth", 50)),
            strides=tuple(b.get("strides", (1, 2, 2, 2))),
            dilations=tuple(b.get("dilations", (1, 1, 1, 1))),
            contract_dilation=bool(b.get("contract_dilation", False)),  # mmseg's ResNet default
            stem_channels=int(b.get("stem_channels", 64)),
            in_channels=int(b.get("in_channels", 3)),
            dilate_conv2=False,  # mmseg's BasicBlock
            multi_grid=tuple(grid) if grid is not None else None,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: the checkpoint's config has an invalid backbone ({e})") from None


def _decode(d: dict[str, Any], ch: tuple[int, ...], k: int, where: str) -> UPerHeadConfig | PSPHeadConfig:
    kind = d.get("type")
    _check_fields(d, {"in_channels", "channels", "pool_scales", "num_classes", "align_corners", "out_channels",
                      "threshold", "input_transform"}, where, "model.decode_head")  # fmt: skip
    out = d.get("out_channels", d.get("num_classes", k))
    if out != k:
        raise _refuse(where, "model.decode_head.out_channels", out, f"the checkpoint's classifier has {k} rows")
    if out != 1 and d.get("threshold") is not None:
        raise _refuse(where, "model.decode_head.threshold", d["threshold"], "a threshold applies to a binary head")
    threshold = float(d.get("threshold") or 0.3) if out == 1 else None  # mmseg's default for out_channels=1
    scales = tuple(int(v) for v in d.get("pool_scales", (1, 2, 3, 6)))
    width, align = int(d.get("channels", 512)), bool(d.get("align_corners", False))
    inputs = (d.get("in_channels"), d.get("in_index"))
    if kind == "PSPHead":
        if d.get("in_channels") not in (None, ch[-1]) or d.get("in_index", 3) not in (3, -1):
            raise _refuse(where, "model.decode_head.in_channels / in_index", inputs)
        return PSPHeadConfig(ch[-1], k, width, scales, align, threshold=threshold)
    if kind == "UPerHead":
        if list(d.get("in_channels", ch)) != list(ch) or list(d.get("in_index", [0, 1, 2, 3])) != [0, 1, 2, 3]:
            raise _refuse(where, "model.decode_head.in_channels / in_index", inputs)
        return UPerHeadConfig(ch, k, width, scales, align, threshold=threshold)
    raise _refuse(where, "model.decode_head.type", kind, "segcli converts PSPHead and UPerHead")


def _auxiliary(a: Any, ch: tuple[int, ...], k: int, where: str) -> FCNHeadConfig | None:
    """The auxiliary FCNHead (never run at inference; its keys are checked like any other)."""
    if a is None:
        return None
    if not isinstance(a, dict) or a.get("type") != "FCNHead":
        what = "several auxiliary heads" if isinstance(a, list) else "segcli's auxiliary head is an FCNHead"
        raise _refuse(where, "model.auxiliary_head", a if not isinstance(a, list) else len(a), what)
    known = {"in_channels", "channels", "num_convs", "concat_input", "kernel_size", "dilation", "num_classes"}
    _check_fields(a, known | {"align_corners", "out_channels", "threshold"}, where, "model.auxiliary_head")
    index = a.get("in_index", 2)
    if not isinstance(index, int) or not -len(ch) <= index < len(ch):
        raise _refuse(where, "model.auxiliary_head.in_index", index)
    return FCNHeadConfig(
        int(a.get("in_channels", ch[index])),
        int(a.get("out_channels") or a.get("num_classes", k)),  # its classifier: 1 for a sigmoid head
        int(a.get("channels", 256)),
        int(a.get("num_convs", 2)),  # mmseg's FCNHead default
        bool(a.get("concat_input", True)),  # likewise
        int(a.get("kernel_size", 3)),
        int(a.get("dilation", 1)),
        index,
    )


def _normalization(cfg: dict[str, Any], where: str) -> Normalization:
    pre = pyconfig.value(cfg, "model.data_preprocessor", where) or pyconfig.value(cfg, "data_preprocessor", where)
    norm = pre if isinstance(pre, dict) and "mean" in pre else pyconfig.value(cfg, "img_norm_cfg", where)  # 0.x
    if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
        raise ConfigError(f"{where}: the checkpoint's config names no mean / std (data_preprocessor)")
    rgb = norm.get("bgr_to_rgb", norm.get("to_rgb", False))
    mean, std = tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])
    if len(mean) != 3 or len(std) != 3:
        raise _refuse(where, "data_preprocessor.mean / std", (mean, std), "segcli feeds RGB images (3 channels)")
    # mmseg reads images as BGR: `bgr_to_rgb` makes them RGB, without it the network sees BGR (mean in BGR order)
    return Normalization((mean[0], mean[1], mean[2]), (std[0], std[1], std[2]), 1.0, bgr=not rgb)


def _protocol(cfg: dict[str, Any], align: bool, where: str) -> Protocol:
    test = pyconfig.value(cfg, "model.test_cfg", where) or {}
    mode = test.get("mode", "whole") if isinstance(test, dict) else "whole"
    if mode not in ("whole", "slide"):
        raise _refuse(where, "model.test_cfg.mode", mode)
    crop = test.get("crop_size", (512, 512)) if mode == "slide" else (512, 512)
    stride = test.get("stride") if mode == "slide" else None
    crop = tuple(crop) if isinstance(crop, (list, tuple)) else (crop, crop)
    stride = tuple(stride) if isinstance(stride, (list, tuple)) else (stride, stride)
    if len(set(crop)) != 1 or len(set(stride)) != 1:  # segcli's protocols slide square windows
        raise _refuse(where, "model.test_cfg", test, "windows that are not square: give --arch (or --preset later)")
    return Protocol(int(crop[0]), mode, int(stride[0]) if stride[0] is not None else None, align, _resize(cfg, where))


def _resize(cfg: dict[str, Any], where: str) -> str | None:
    """The test pipeline's resize as a `--resize` text: keep-ratio `scale=(long, short)` → "short:long", a
    fixed one → "HxW" (None: the pipeline names none; the preset's default then)."""
    pipeline = pyconfig.value(cfg, "test_pipeline", where) or []
    for step in pipeline if isinstance(pipeline, list) else []:
        if isinstance(step, dict) and step.get("type") in ("Resize", "MultiScaleFlipAug"):
            scale = step.get("scale", step.get("img_scale"))
            if isinstance(scale, (list, tuple)) and len(scale) == 2 and all(isinstance(v, int) for v in scale):
                long, short = max(scale), min(scale)
                return f"{short}:{long}" if step.get("keep_ratio", True) else f"{scale[1]}x{scale[0]}"
    return None


def describe(meta: Any, num_classes: int, where: str) -> Described:
    """The network (and classes, protocol) an mmseg checkpoint's own config describes, with `num_classes`
    from its classifier."""
    text = config_text(meta)
    if text is None:
        raise ConfigError(
            f"{where}: the checkpoint carries no config (meta['cfg'] / meta['config'])",
            hint="convert with --arch NAME: a registry entry that describes the network",
        )
    cfg = pyconfig.parse(text, where)
    model = pyconfig.value(cfg, "model", where)
    if not isinstance(model, dict):
        raise ConfigError(f"{where}: the checkpoint's config has no `model`")
    if model.get("type") != "EncoderDecoder":
        raise _refuse(where, "model.type", model.get("type"), "segcli converts EncoderDecoder models")
    backbone = _backbone(model.get("backbone") or {}, where)
    ch = backbone.out_channels
    decode = _decode(model.get("decode_head") or {}, ch, num_classes, where)
    aux = _auxiliary(model.get("auxiliary_head"), ch, num_classes, where)
    network = SegmentorConfig(backbone, decode, aux, _normalization(cfg, where))
    names, palette = _classes(meta)
    return Described(network, names, palette, _protocol(cfg, decode.align_corners, where))


def _classes(meta: dict[str, Any]) -> tuple[tuple[str, ...] | None, list[Any] | None]:
    found = meta.get("dataset_meta")
    dataset: dict[str, Any] = found if isinstance(found, dict) else {}
    names = dataset.get("classes", meta.get("CLASSES"))
    palette = dataset.get("palette", meta.get("PALETTE"))
    listed = tuple(str(n) for n in names) if isinstance(names, (list, tuple)) else None
    ok = listed is not None and all(isinstance(n, str) for n in names or ())
    return (listed if ok else None), (list(palette) if isinstance(palette, (list, tuple)) else None)
