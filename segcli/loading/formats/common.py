"""What the JSON-based formats share: the strict object reader, class names + palette, the `segcli` block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...engine.presets import MODES, PRESETS, Protocol, Resize
from ...errors import ConfigError, UsageError
from ...fsutil import read_json_object
from ..classes import ClassSet, class_set_for
from .schema import CROP, ID2LABEL, MAX_CLASSES, PALETTE, RESIZE, Bool, Int, Opt, Str, Table, field_names

SEGCLI_KEYS = ("preset", "crop_size", "mode", "stride", "align_corners", "resize")
MAX_JSON_BYTES = 32 << 20  # a config with 65536 class names is about 2 MB

SEGCLI_BLOCK = Table(
    {
        "preset": Str(choices=tuple(PRESETS)),
        "crop_size": CROP,
        "mode": Str(choices=MODES),
        "stride": Opt(CROP),
        "align_corners": Bool(),
        "resize": Opt(RESIZE),
    },
    closed=True,
)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path` (a regular file of at most 32 MB), or a ConfigError naming the file."""
    try:
        return read_json_object(path, MAX_JSON_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except ValueError as e:
        if str(e) == "not a JSON object":
            raise ConfigError(f"{path}: expected a JSON object") from None
        raise ConfigError(f"{path}: not a readable JSON file ({e})") from None
    except OSError as e:
        raise ConfigError(f"{path}: not a readable JSON file ({e.strerror or e})") from None


def dump_json(doc: dict[str, Any], *, sort_keys: bool = False) -> bytes:
    """Indented JSON with a final newline (ASCII-escaped), as segcli writes configs and sidecars."""
    return (json.dumps(doc, indent=2, sort_keys=sort_keys) + "\n").encode()


def class_names(cfg: dict[str, Any], where: str) -> tuple[str, ...]:
    """Names from `id2label` ({"0": name, ...}, ids 0..K-1 without gaps), else transformers' defaults:
    `num_labels` (2 when absent: what `save_pretrained` leaves out) names LABEL_0, LABEL_1, ..."""
    id2label = cfg.get("id2label")
    n = Int(1, MAX_CLASSES).check(cfg.get("num_labels", 2), where, "num_labels")
    if not id2label:
        return tuple(f"LABEL_{i}" for i in range(n))
    if not isinstance(id2label, dict):
        raise ConfigError(f"{where}: id2label must map integer ids to names")
    labels = {int(k): v for k, v in ID2LABEL.check(id2label, where, "id2label").items()}
    if sorted(labels) != list(range(len(labels))):
        raise ConfigError(f"{where}: id2label ids must be 0..{len(labels) - 1} without gaps")
    return tuple(labels[i] for i in range(len(labels)))


def class_set(cfg: dict[str, Any], names: tuple[str, ...], where: str) -> ClassSet:
    """The names with the config's `palette` when it has one (else bundled or derived colours)."""
    if cfg.get("palette") is not None:
        PALETTE.check(cfg["palette"], where, "palette")
    try:
        return class_set_for(names, cfg.get("palette"))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}") from None


def segcli_block(block: Any, where: str) -> tuple[str, Protocol]:
    """Optional `"segcli": {"preset", "crop_size", "mode", "stride", "align_corners", "resize"}` of a
    config.json (written by `segcli convert` / `export`): the default preset and the evaluation protocol."""
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: `segcli` must be an object")
    unknown = sorted(set(block) - set(SEGCLI_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown `segcli` field(s) {field_names(unknown)}")
    mode = block.get("mode", "whole")
    if mode not in MODES:
        raise ConfigError(f"{where}: segcli.mode must be whole or slide, got {mode!r}")
    preset = block.get("preset", "hf")
    if preset not in PRESETS:
        raise ConfigError(f"{where}: segcli.preset {preset!r} is not a preset ({', '.join(PRESETS)})")
    block = SEGCLI_BLOCK.check(block, where, "segcli")
    if block.get("resize") is not None:
        try:
            Resize.parse(block["resize"])
        except UsageError as e:
            raise ConfigError(f"{where}: `segcli.resize` {e.message}", hint=e.hint) from None
    proto = Protocol(
        int(block.get("crop_size", 512)),
        mode,
        block.get("stride"),
        bool(block.get("align_corners", False)),
        block.get("resize"),
    )
    return preset, proto


def protocol_block(preset: str, proto: Protocol) -> dict[str, Any]:
    """The inverse of `segcli_block`."""
    return {
        "preset": preset,
        "crop_size": proto.crop_size,
        "mode": proto.mode,
        "stride": proto.stride,
        "align_corners": proto.align_corners,
        "resize": proto.resize,
    }
