"""The export sidecar (`segcli-export/1`): `FILE.onnx.json` / `FILE.pt.json` beside an exported model.

Everything needed to use the exported file without segcli (input layout and normalisation, output, classes,
palette, preset, protocol, source), and what `--model FILE.onnx` reads to run it. Written by `segcli export`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...engine.heads import Heads
from ...engine.presets import Protocol
from ...errors import ConfigError
from ...fsutil import atomic_write_bytes
from ...model.segmentor import Normalization
from ...versions import made_by
from ..classes import class_set_for
from ..info import ModelInfo, Origin
from .common import dump_json, read_json
from .schema import CLASS_NAME, CROP, MAX_CLASSES, MEAN, PALETTE, SCALE, STD, Bool, Float, Int, List, Opt, Str, Table

FORMAT = "segcli-export/1"
SIDECAR = Table(
    {
        "format": Str(choices=(FORMAT,)),
        "model_format": Str(choices=("onnx", "torchscript")),
        "input": Table(
            {
                "name": Str(max_len=32),
                "size": Opt(List(Int(1, 16384), 2, 2)),
                "normalization": Table(
                    {"mean": MEAN, "std": STD, "scale": SCALE, "bgr": Bool()}, required=("mean", "std", "scale")
                ),
            },
            required=("name", "size", "normalization"),
        ),
        "output": Table({"name": Str(max_len=32), "threshold": Opt(Float(0.0, 1.0))}, required=("name",)),
        "classes": List(CLASS_NAME, 1, MAX_CLASSES),
        "palette": Opt(PALETTE),
        "align_corners": Bool(),
        "preset": Table({"name": Str(max_len=32)}),
        "protocol": Table({"crop_size": CROP, "mode": Str(choices=("whole", "slide")), "stride": Opt(CROP)}),
        "source": Table({k: Opt(Str(max_len=4096)) for k in ("name", "kind", "repo", "revision", "sha256", "path")}),
    },
    required=("format", "model_format", "input", "output", "classes", "source"),
)


@dataclass(frozen=True)
class Layout:
    """What the exported graph takes and returns."""

    model_format: str  # "onnx" | "torchscript"
    size: tuple[int, int] | None  # None: any height and width (dynamic export)
    with_preprocess: bool = False  # uint8 RGB NHWC in (normalisation inside the graph)
    labels: bool = False  # argmax inside the graph: class indices out


def path_for(model_file: Path) -> Path:
    return model_file.with_suffix(model_file.suffix + ".json")


def _binary(info: ModelInfo) -> dict[str, Any]:
    """A binary head's output (written only then: earlier sidecars read the same)."""
    t = info.network.threshold if info.network is not None else None
    if t is None:
        return {}
    return {"threshold": t, "binary": "one logit channel: class 1 where sigmoid(logit) > threshold"}


def _parser(info: ModelInfo) -> dict[str, Any]:
    """A unified parser's channel layout and other heads' classes (written only then)."""
    from .arch import tables_from_network
    from .native import head_classes_json

    if info.network is None or info.network.arch != "upp":
        return {}
    return {"head": tables_from_network(info.network)[1], "head_classes": head_classes_json(info.head_sets)}


def heads(doc: dict[str, Any], num_classes: int, where: str) -> Heads:
    """The channel layout an export's sidecar describes: a softmax head, a binary one, or a parser's."""
    from .arch import parser_heads

    if "head" in doc:
        return parser_heads(doc["head"], num_classes, where)
    t = threshold(doc)
    return Heads.binary(t) if t is not None else Heads.single(num_classes)


def threshold(doc: dict[str, Any]) -> float | None:
    """The binary head's threshold an export's sidecar records (None: a softmax head)."""
    t = doc.get("output", {}).get("threshold")
    return float(t) if t is not None else None


def describe(
    info: ModelInfo, norm: Normalization, align_corners: bool, params: dict[str, Any], layout: Layout
) -> dict[str, Any]:
    """The sidecar document of an export of the model `info` describes."""
    o, p = info.origin, info.protocol
    return {
        "format": FORMAT,
        "exported_by": made_by(),
        "model_format": layout.model_format,
        "input": {
            "name": "pixels" if layout.with_preprocess else "input",
            "layout": "NHWC uint8 RGB 0..255" if layout.with_preprocess else "NCHW float32, normalised",
            "size": None if layout.size is None else list(layout.size),
            "dynamic": ["batch", "height", "width"] if layout.size is None else ["batch"],
            "normalization": {
                "mean": list(norm.mean),
                "std": list(norm.std),
                "scale": norm.scale,
                **({"bgr": True} if norm.bgr else {}),  # written when set: earlier sidecars read the same
                "formula": f"(pixel * scale - mean) / std per {'BGR' if norm.bgr else 'RGB'} channel",
            },
        },
        "output": {
            "name": "labels" if layout.labels else "logits",
            "layout": "NHW int64 class indices" if layout.labels else "NCHW float32 logits at the input size",
            **_binary(info),
            **_parser_outputs(info),
        },
        "classes": list(info.classes),
        "palette": [[int(v) for v in c] for c in info.class_set.palette],
        "align_corners": align_corners,
        "preset": {"name": info.default_preset, "resolved": params},
        "protocol": {"crop_size": p.crop_size, "mode": p.mode, "stride": p.stride, "resize": p.resize},
        "source": {
            "name": info.name,
            "kind": o.kind,
            "repo": o.repo,
            "revision": o.revision,
            "sha256": o.sha256,
            "path": o.path,
        },
        **_parser(info),
    }


def _parser_outputs(info: ModelInfo) -> dict[str, Any]:
    if info.network is None or info.network.arch != "upp":
        return {}
    return {
        "outputs": ["logits", "scene"],
        "channels": "logits: objects, then materials, then one softmax group per object with parts (`head`)",
        "scene": "NS float32 scene logits",
    }


def write(model_file: Path, doc: dict[str, Any]) -> Path:
    side = path_for(model_file)
    atomic_write_bytes(side, dump_json(doc))
    return side


def read(model_file: Path, model_format: str = "onnx") -> dict[str, Any]:
    """The sidecar of an exported logits model (ONNX, or TorchScript), checked to be one segcli can run."""
    side = path_for(model_file)
    what = "ONNX" if model_format == "onnx" else "TorchScript"
    if not side.is_file():
        raise ConfigError(
            f"{model_file}: no {side.name} beside it",
            hint=f"segcli runs {what} files together with the sidecar JSON `segcli export` writes",
        )
    doc = read_json(side)
    if doc.get("format") != FORMAT:
        raise ConfigError(f"{side}: not a segcli export sidecar ({FORMAT} expected)")
    if doc.get("model_format") != model_format:
        raise ConfigError(f"{side}: describes a {doc.get('model_format')} export, not {what}")
    doc = SIDECAR.check(doc, str(side), "")
    if doc.get("palette") is not None and len(doc["palette"]) != len(doc["classes"]):
        raise ConfigError(f"{side}: {len(doc['classes'])} classes but {len(doc['palette'])} palette colours")
    if doc["output"]["name"] != "logits" or doc["input"]["name"] != "input":
        raise ConfigError(
            f"{model_file}: exported with --labels or --with-preprocess; segcli predict needs the logits model",
            hint="export again without --labels / --with-preprocess",
        )
    return doc


def normalization(doc: dict[str, Any]) -> Normalization:
    n = doc["input"]["normalization"]
    return Normalization(tuple(n["mean"]), tuple(n["std"]), float(n["scale"]), bool(n.get("bgr", False)))


def input_size(doc: dict[str, Any]) -> tuple[int, int] | None:
    size = doc["input"]["size"]
    return (int(size[0]), int(size[1])) if size else None


def read_info(model_file: Path, doc: dict[str, Any]) -> ModelInfo:
    """ModelInfo of an exported file: classes, input size, default preset and protocol from its sidecar."""
    pr = doc.get("protocol", {})
    proto = Protocol(
        int(pr.get("crop_size", 512)),
        pr.get("mode", "whole"),
        pr.get("stride"),
        bool(doc.get("align_corners", False)),
        pr.get("resize"),
    )
    size = input_size(doc) or (512, 512)
    classes = class_set_for(tuple(doc["classes"]), doc.get("palette"))
    src = doc["source"]
    origin = Origin(
        doc.get("model_format", "onnx"),
        src.get("repo"),
        src.get("revision"),
        model_file.name,
        src.get("sha256"),
        str(model_file.resolve()),
    )
    head_sets: dict[str, Any] = {}
    if "head" in doc:
        from .native import head_classes

        h = heads(doc, len(classes.classes), str(path_for(model_file)))
        sizes = {"part": h.part_classes, "material": dict(h.extras)["material"], "scene": h.image_level}
        head_sets = head_classes(doc.get("head_classes"), sizes, str(path_for(model_file)))
    preset = doc.get("preset", {}).get("name", "hf")
    fixed = input_size(doc)
    if fixed is not None and not (proto.mode == "slide" and (proto.crop_size, proto.crop_size) == fixed):
        preset = "hf"  # a fixed-size export runs the fixed-size preset unless it slides windows of that size
    return ModelInfo(str(model_file), None, classes, size, preset, origin, proto, head_sets)
