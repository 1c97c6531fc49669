"""Class maps (`--class-map FILE`): a model's classes merged into the classes a user wants.

A map names, for source classes (by name or index), the output class each belongs to; several may share
one. `*` stands for every class the map does not name; without it those are *ignored*. An ignored class,
like a target left empty (CSV) or `null` (JSON), belongs to no output class: where the ignored classes
together are the most probable, the label is the ignore value (255, or 65535 above 255 output classes:
the ignore index of ADE20K, Cityscapes and mmseg), which no output counts, draws or outlines.

JSON: an object `{"house": "building", "skyscraper": "building", "tree": "vegetation", "*": "other"}`.
CSV: rows `source,target` (a first row `source,target` is a header), `#` starts a comment line.

Output classes are numbered in the order they first appear in the file; each takes the colour of its first
source class. The model's decision among output classes is the most probable of them, each the summed
probability of its source classes (`engine.grouped`), not a renaming of the source argmax.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .classes import ClassSet

MAX_BYTES = 1 << 20  # a class map is a few kilobytes; anything larger is not one


@dataclass(frozen=True)
class ClassMap:
    """Output class (index into `classes`) of each source class; -1: ignored."""

    source: Path
    table: tuple[int, ...]  # [K source classes] → output index or -1
    class_set: ClassSet  # the output classes and their colours
    sha256: str  # of the normalised mapping (what the fingerprint holds)
    source_set: ClassSet  # the model's own classes

    @property
    def ignores(self) -> bool:
        return -1 in self.table

    @property
    def ignore_label(self) -> int:
        return 255 if len(self.class_set.classes) <= 255 else 65535

    def to_json(self) -> dict[str, Any]:
        """The JSON's `class_map` (the inference record: in the fingerprint, so not the file's path): its digest,
        each output class with its source classes' names."""
        names, src = self.class_set.classes, self.source_set.classes
        members = {n: [src[i] for i, t in enumerate(self.table) if t == o] for o, n in enumerate(names)}
        out: dict[str, Any] = {"sha256": self.sha256, "classes": members}
        if self.ignores:
            out["ignored"] = [src[i] for i, t in enumerate(self.table) if t < 0]
            out["ignore_label"] = self.ignore_label
        return out


def load(path: Path, source: ClassSet) -> ClassMap:
    """The class map in `path` (JSON or CSV) for a model with the classes of `source`; ConfigError naming
    the file (and the line) for anything that is not one."""
    try:
        raw = path.read_bytes()[: MAX_BYTES + 1]
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the class map ({e.strerror})", hint="check the --class-map path") from e
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than 1 MiB — not a class map", hint="give a JSON object or a CSV file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text", hint="save the class map as UTF-8 JSON or CSV") from e
    pairs = _json_pairs(path, text) if text.lstrip().startswith("{") else _csv_pairs(path, text)
    return build(path, pairs, source)


def _json_pairs(path: Path, text: str) -> list[tuple[str, str | None, str]]:
    try:
        doc = json.loads(text, object_pairs_hook=lambda kv: kv)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})", hint="fix the JSON, or give a CSV") from e
    pairs = []
    for key, value in doc:
        if value is not None and not isinstance(value, str):
            raise ConfigError(
                f"{path}: {key!r} maps to {value!r}", hint="give an output class name, or null to ignore the class"
            )
        pairs.append((key, value, str(path)))
    return pairs


def _csv_pairs(path: Path, text: str) -> list[tuple[str, str | None, str]]:
    pairs = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise ConfigError(
                f"{path}:{n}: {len(row)} columns", hint="each row is source,target (target empty: ignore)"
            )
        src, dst = row[0].strip(), row[1].strip()
        if n == 1 and (src.lower(), dst.lower()) == ("source", "target"):
            continue
        pairs.append((src, dst or None, f"{path}:{n}"))
    return pairs


def build(path: Path, pairs: list[tuple[str, str | None, str]], source: ClassSet) -> ClassMap:
    """The map of (source, target or None, where) pairs over the classes of `source`."""
    names = source.classes
    index = {n: i for i, n in enumerate(names)}
    targets: list[str] = []
    table: list[int | None] = [None] * len(names)
    others: int | None = None  # `*`: what unnamed classes get (None: not given → ignored)
    seen_others = False
    for src, dst, where in pairs:
        out = -1 if dst is None else _target(targets, dst)
        if src == "*":
            if seen_others:
                raise ConfigError(f"{where}: `*` is given twice", hint="keep one rule for the other classes")
            others, seen_others = out, True
            continue
        i = _source(src, index, len(names), where, source.name)
        if table[i] is not None:
            raise ConfigError(f"{where}: class {names[i]!r} is mapped twice", hint="map each source class once")
        table[i] = out
    if not targets:
        raise ConfigError(
            f"{path}: the class map names no output class", hint='e.g. {"house": "building", "*": "other"}'
        )
    final = tuple(t if t is not None else (others if others is not None else -1) for t in table)
    colours = tuple(source.palette[final.index(o)] if o in final else (0, 0, 0) for o in range(len(targets)))
    out_set = ClassSet(f"{source.name}→{path.stem}", tuple(targets), colours)
    digest = hashlib.sha256(json.dumps([targets, final]).encode()).hexdigest()
    return ClassMap(path, final, out_set, digest, source)


def _target(targets: list[str], name: str) -> int:
    if name not in targets:
        targets.append(name)
    return targets.index(name)


def _source(text: str, index: dict[str, int], k: int, where: str, set_name: str) -> int:
    if text in index:
        return index[text]
    if text.isdigit() and int(text) < k:
        return int(text)
    close = [n for n in index if n.lower() == text.lower()][:1]
    hint = (
        f"did you mean {close[0]!r}?" if close else f"use one of the model's {k} class names ({set_name}) or 0..{k - 1}"
    )
    raise ConfigError(f"{where}: {text!r} is not a class of the model", hint=hint)
