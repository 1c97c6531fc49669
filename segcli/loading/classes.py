"""Class sets (names + RGB palettes): the bundled sets (ADE20K, Cityscapes, VOC 2012, and the unified
perceptual parser's Broden+ objects with their parts, materials and scenes), and derived palettes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..fsutil import read_regular

KNOWN_SETS = ("ade20k", "cityscapes", "voc2012", "unifiedparsing")
HEAD_SETS = ("part", "material", "scene")  # the other heads' class sets a bundled set may carry


@dataclass(frozen=True)
class ClassSet:
    name: str  # "ade20k", "cityscapes", or "custom"
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class index

    def __post_init__(self) -> None:
        if len(self.classes) != len(self.palette):
            raise ConfigError(f"class set {self.name!r}: {len(self.classes)} names but {len(self.palette)} colours")

    @property
    def palette_array(self) -> np.ndarray:
        return np.asarray(self.palette, dtype=np.uint8).reshape(-1, 3)


@cache
def _bundled(name: str) -> dict[str, Any]:
    if name not in KNOWN_SETS:
        raise ConfigError(f"unknown class set {name!r}", hint=f"bundled sets: {', '.join(KNOWN_SETS)}")
    return json.loads((resources.files("segcli.loading") / "data" / f"{name}.json").read_text(encoding="utf-8"))


@cache
def known_set(name: str) -> ClassSet:
    """A bundled class set by name (`ade20k`, `cityscapes`, `voc2012`, `unifiedparsing`)."""
    data = _bundled(name)
    return ClassSet(name, tuple(data["classes"]), tuple(tuple(c) for c in data["palette"]))


@cache
def head_sets(name: str) -> dict[str, ClassSet]:
    """The other heads' class sets of a bundled set (`unifiedparsing`: part, material, scene), by head."""
    data = _bundled(name)
    out = {}
    for head in HEAD_SETS:
        if head in data:
            names = tuple(data[head]["classes"])
            palette = tuple(tuple(c) for c in data[head].get("palette", derived_palette(len(names))))
            out[head] = ClassSet(f"{name}-{head}", names, palette)
    return out


def parsing_head(name: str) -> dict[str, Any]:
    """The `upp` head table fields a bundled set implies: class counts and the object → parts hierarchy."""
    data, sets = _bundled(name), head_sets(name)
    if "object_parts" not in data:
        raise ConfigError(f"class set {name!r} has no part hierarchy", hint="the upp head needs dataset unifiedparsing")
    return {
        "material_classes": len(sets["material"].classes),
        "scene_classes": len(sets["scene"].classes),
        "part_classes": len(sets["part"].classes),
        "part_groups": [{"object": o, "parts": parts} for o, parts in data["object_parts"]],
    }


def derived_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """n distinct colours: the PASCAL VOC bit-interleaved colour map (0 → black), extended to any n."""
    out = []
    for i in range(n):
        r = g = b = 0
        c, shift = i, 7
        while c and shift >= 0:
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
            shift -= 1
        out.append((r, g, b))
    return tuple(out)


def class_set_for(names: tuple[str, ...], palette: list | None = None) -> ClassSet:
    """Class set for a model's names: a bundled set when the names match it exactly (so ADE20K models get
    the ADE20K palette), the given palette when the config carries one, else a derived palette."""
    if palette is not None:
        try:
            colours = tuple((int(r), int(g), int(b)) for r, g, b in palette)
        except (TypeError, ValueError):
            raise ConfigError("`palette` must be a list of [R, G, B] integer triples") from None
        if any(not 0 <= v <= 255 for c in colours for v in c):
            raise ConfigError("`palette` values must be 0..255")
        return ClassSet("custom", names, colours)
    for name in KNOWN_SETS:
        if known_set(name).classes == names:
            return known_set(name)
    return ClassSet("custom", names, derived_palette(len(names)))


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names from a JSON list, a JSON {"0": name} mapping, or a text file with one name per line."""
    try:
        text = read_regular(path, 32 << 20).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read class names ({getattr(e, 'strerror', None) or e})") from None
    if path.suffix.lower() != ".json":
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("id2label", data)
        try:
            data = [data[k] for k in sorted(data, key=int)]
        except (ValueError, TypeError):
            raise ConfigError(f"{path}: expected a list of names or an {{id: name}} mapping") from None
    if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
        raise ConfigError(f"{path}: expected a list of class names")
    return tuple(data)
