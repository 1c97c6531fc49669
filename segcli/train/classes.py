"""The classes a model is trained for (`--classes FILE`), in the shapes people have them, and how the
starting model's classifiers map onto them.

Files: segcli's own `classes.json` (`{"classes": [{"index", "name", "color"}]}`), mmseg's dataset meta
(`{"classes": [names], "palette": [[r, g, b], …]}`), a JSON list of names, one name per line, or CSV lines
`name,r,g,b`. Without colours, a bundled set's palette when the names are one (ADE20K, …), else a derived one.

Classifiers (`remap`): rows of classes whose names the starting model has are kept (a subset, a new order,
new classes added); the others start as mmseg initialises a classifier (normal, std 0.01; bias 0).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import torch

from ..errors import ConfigError
from ..fsutil import read_regular
from ..loading.classes import ClassSet, class_set_for

MAX_BYTES = 32 << 20
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def read_classes(path: Path) -> ClassSet:
    """The class set in `path` (ConfigError naming the file and what is wrong)."""
    path = Path(path)
    try:
        text = read_regular(path, MAX_BYTES).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read classes ({getattr(e, 'strerror', None) or e})") from None
    if path.suffix.lower() == ".json":
        names, palette = _json(text, path)
    elif path.suffix.lower() == ".csv" or ("," in text.splitlines()[0] if text.strip() else False):
        names, palette = _csv(text, path)
    else:
        names, palette = [line.strip() for line in text.splitlines() if line.strip()], None
    if not names:
        raise ConfigError(f"{path}: no class names")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"{path}: class {dup!r} is named twice")
    if palette is not None and len(palette) != len(names):
        raise ConfigError(f"{path}: {len(names)} classes but {len(palette)} colours")
    try:
        return class_set_for(tuple(names), palette)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}") from None


def _json(text: str, path: Path) -> tuple[list[str], list | None]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid JSON ({str(e)[:100]})") from None
    if isinstance(doc, list) and all(isinstance(n, str) for n in doc):
        return list(doc), None
    entries = doc.get("classes") if isinstance(doc, dict) else None
    if isinstance(entries, list) and all(isinstance(n, str) for n in entries):  # mmseg's dataset meta
        return list(entries), doc.get("palette")
    if isinstance(entries, list) and all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries):
        ordered = sorted(entries, key=lambda e: e.get("index", 0)) if all("index" in e for e in entries) else entries
        colours = [e.get("color") for e in ordered]
        if all(isinstance(c, str) and _HEX.match(c) for c in colours):
            return [e["name"] for e in ordered], [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colours]
        return [e["name"] for e in ordered], None
    raise ConfigError(
        f"{path}: not a classes file",
        hint='expected a list of names, {"classes": [names], "palette": [[r, g, b], ...]}, or segcli\'s classes.json',
    )


def _csv(text: str, path: Path) -> tuple[list[str], list | None]:
    names, palette = [], []
    for n, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip():
            continue
        if n == 1 and [c.strip().lower() for c in row[:1]] == ["name"]:
            continue  # a header
        if len(row) != 4:
            raise ConfigError(f"{path}:{n}: expected name,r,g,b")
        try:
            palette.append([int(v) for v in row[1:]])
        except ValueError:
            raise ConfigError(f"{path}:{n}: r, g, b must be integers 0..255") from None
        names.append(row[0].strip())
    return names, palette


def remap(
    tensors: dict[str, torch.Tensor],
    shapes: dict[str, tuple[int, ...]],
    old: tuple[str, ...],
    new: tuple[str, ...],
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """`tensors` (the starting model's) for a network whose classifier tensors have the `shapes` given:
    rows of matching names copied, the rest initialised; ({key: tensor}, {new class: old index kept})."""
    kept = {name: old.index(name) for name in new if name in old}
    g = torch.Generator().manual_seed(seed)
    out = dict(tensors)
    for key, shape in shapes.items():
        t = tensors[key]
        if tuple(t.shape) == tuple(shape):
            continue
        if t.shape[0] != len(old) or tuple(t.shape[1:]) != tuple(shape[1:]):
            raise ConfigError(f"cannot map {key} {tuple(t.shape)} onto {len(new)} classes {tuple(shape)}")
        fresh = torch.zeros(shape) if t.ndim == 1 else torch.randn(shape, generator=g) * 0.01
        fresh = fresh.to(t.dtype)
        for i, name in enumerate(new):
            if name in kept:
                fresh[i] = t[kept[name]]
        out[key] = fresh
    return out, kept
