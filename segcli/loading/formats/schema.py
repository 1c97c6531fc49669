"""Bounds for untrusted configuration values, checked before anything is built from them.

A small hand-written checker (one entry per key) rather than a schema library: the configs segcli reads are
few and flat, the bounds are the point (`num_labels` 10⁹ or `depths [1,1,1,10⁶]` must fail in
microseconds, without allocating), and core installs stay free of another dependency. Each problem is one
`ConfigError` naming the file and the key path, e.g. ``config.json: `backbone_config.depths[3]` = 1000000
is out of range 1..64``. Keys a schema does not list are ignored (transformers configs carry many); a key
listed with a value of the wrong type or out of range is an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

MAX_CLASSES = 65536  # label PNGs are 16-bit at most


class Check:
    """One value's rule. `check` returns the value (possibly normalised) or raises ConfigError."""

    def check(self, value: Any, where: str, key: str) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def fail(self, where: str, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}: `{key}` {problem}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def field_names(keys: Any, limit: int = 10) -> str:
    """Keys from an untrusted file, for a one-line message: printable short names as they are, anything else
    (control characters, long or odd names) as a shortened repr; at most `limit` of them."""
    keys = sorted(map(str, keys))
    shown = [k if k.isprintable() and len(k) <= 40 and k.strip() == k and k else _show(k) for k in keys[:limit]]
    return ", ".join(shown) + (f", … and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclass(frozen=True)
class Int(Check):
    lo: int
    hi: int
    choices: tuple[int, ...] | None = None

    def check(self, value: Any, where: str, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, key, f"must be an integer, got {_show(value)}")
        if self.choices is not None and value not in self.choices:
            raise self.fail(where, key, f"= {value} is not one of {', '.join(map(str, self.choices))}")
        if not self.lo <= value <= self.hi:
            raise self.fail(where, key, f"= {value} is out of range {self.lo}..{self.hi}")
        return value


@dataclass(frozen=True)
class Float(Check):
    lo: float
    hi: float
    open_lo: bool = False  # value must be > lo (e.g. a standard deviation)

    def check(self, value: Any, where: str, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, key, f"must be a number, got {_show(value)}")
        v = float(value)
        if not math.isfinite(v) or v < self.lo or v > self.hi or (self.open_lo and v == self.lo):
            bound = f"({self.lo}, {self.hi}]" if self.open_lo else f"[{self.lo}, {self.hi}]"
            raise self.fail(where, key, f"= {_show(value)} is outside {bound}")
        return v


@dataclass(frozen=True)
class Bool(Check):
    def check(self, value: Any, where: str, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, key, f"must be true or false, got {_show(value)}")
        return value


@dataclass(frozen=True)
class Str(Check):
    max_len: int = 256
    choices: tuple[str, ...] | None = None
    pattern: str | None = None

    def check(self, value: Any, where: str, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, key, f"must be a string, got {_show(value)}")
        if len(value) > self.max_len:
            raise self.fail(where, key, f"is longer than {self.max_len} characters")
        if self.choices is not None and value not in self.choices:
            raise self.fail(where, key, f"= {_show(value)} is not one of {', '.join(self.choices)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise self.fail(where, key, f"= {_show(value)} is not a valid value")
        return value


@dataclass(frozen=True)
class List(Check):
    item: Check
    min_len: int = 0
    max_len: int = 64

    def check(self, value: Any, where: str, key: str) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise self.fail(where, key, f"must be a list, got {_show(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            size = f"{self.min_len}" if self.min_len == self.max_len else f"{self.min_len}..{self.max_len}"
            raise self.fail(where, key, f"must have {size} entries, has {len(value)}")
        return [self.item.check(v, where, f"{key}[{i}]") for i, v in enumerate(value)]


@dataclass(frozen=True)
class Opt(Check):
    """`inner`, or null / None."""

    inner: Check

    def check(self, value: Any, where: str, key: str) -> Any:
        return None if value is None else self.inner.check(value, where, key)


@dataclass(frozen=True)
class Either(Check):
    """The first of `options` that accepts the value (the error of the last one otherwise)."""

    options: tuple[Check, ...]

    def check(self, value: Any, where: str, key: str) -> Any:
        error: ConfigError | None = None
        for option in self.options:
            try:
                return option.check(value, where, key)
            except ConfigError as e:
                error = e
        assert error is not None
        raise error


@dataclass(frozen=True)
class Mapping(Check):
    """A JSON object with arbitrary keys (e.g. `id2label`)."""

    key: Check
    value: Check
    max_len: int = MAX_CLASSES

    def check(self, value: Any, where: str, key: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, key, f"must be an object, got {_show(value)}")
        if len(value) > self.max_len:
            raise self.fail(where, key, f"has {len(value)} entries, more than {self.max_len}")
        return {
            self.key.check(k, where, f"{key} key"): self.value.check(v, where, f"{key}.{k}") for k, v in value.items()
        }


@dataclass(frozen=True)
class Table(Check):
    """A JSON object / TOML table with known keys; others are ignored unless `closed`."""

    fields: dict[str, Check]
    required: tuple[str, ...] = ()
    closed: bool = False
    extra: Callable[[dict[str, Any], str, str], None] | None = field(default=None, compare=False)

    def check(self, value: Any, where: str, key: str = "") -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, key or "(top level)", f"must be an object, got {_show(value)}")
        missing = [k for k in self.required if k not in value]
        if missing:
            raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}" + (f" in `{key}`" if key else ""))
        if self.closed:
            unknown = sorted(set(value) - set(self.fields))
            if unknown:
                raise ConfigError(f"{where}: unknown field(s) {field_names(unknown)}" + (f" in `{key}`" if key else ""))
        out = dict(value)
        for name, rule in self.fields.items():
            if name in value:
                out[name] = rule.check(value[name], where, f"{key}.{name}" if key else name)
        if self.extra is not None:
            self.extra(out, where, key)
        return out


def check(doc: Any, rule: Check, where: str) -> Any:
    """`rule.check` at the top level of a document."""
    return rule.check(doc, where, "")


# Rules shared by several formats
CHANNELS = Int(1, 8192)
CLASS_NAME = Str(max_len=256)
PALETTE = List(List(Int(0, 255), 3, 3), 1, MAX_CLASSES)
POOL_SCALES = List(Int(1, 64), 1, 8)
CROP = Int(1, 16384)
MEAN = List(Float(-1e6, 1e6), 3, 3)
STD = List(Float(0.0, 1e6, open_lo=True), 3, 3)
SCALE = Float(0.0, 1e6, open_lo=True)
RESIZE = Str(max_len=32)  # parsed and bounded by presets.Resize
ID2LABEL = Mapping(Str(max_len=6, pattern=r"\d+"), CLASS_NAME)
