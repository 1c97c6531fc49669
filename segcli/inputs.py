"""Input discovery for batch prediction: files, folders, glob patterns and `-` (paths on stdin).

Every image gets an output name: its path relative to the *input root* it came from — a folder argument
is its own root; files named directly, by a glob or on stdin have their folder as root — taken relative
to the common ancestor of all roots, so two inputs can never share an output name unless they share a
folder and a stem (`x.jpg`, `x.png`): those keep their extension in the name (`x.jpg.png`).
The order is deterministic (sorted by output name); an image named twice is processed once.
"""

from __future__ import annotations

import glob
import os
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import UsageError

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Item:
    path: Path  # the image as given (or found)
    name: Path  # output name relative to --out, without suffix: <relative folder>/<stem>


@dataclass
class Discovery:
    items: list[Item] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (input as given, reason)


def parse_extensions(text: str | None) -> tuple[str, ...]:
    if not text:
        return DEFAULT_EXTENSIONS
    exts = tuple("." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())
    if not exts:
        raise UsageError(f"invalid --ext {text!r}", hint="e.g. --ext jpg,png")
    return exts


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`i/n` with 0 <= i < n."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"invalid --shard {text!r}", hint="give INDEX/COUNT, e.g. 0/4 (indices start at 0)") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"invalid --shard {text!r}: need 0 <= INDEX < COUNT", hint="e.g. 0/4 … 3/4")
    return i, n


def in_shard(item: Item, shard: tuple[int, int] | None) -> bool:
    """Stable assignment by output name: shards partition the inputs, and adding files moves no others."""
    if shard is None:
        return True
    return zlib.crc32(item.name.as_posix().encode("utf-8")) % shard[1] == shard[0]


def read_list(stream: IO[bytes], null: bool) -> list[str]:
    data = stream.read()
    parts = data.split(b"\0") if null else data.splitlines()
    return [os.fsdecode(p.rstrip(b"\r") if not null else p) for p in parts if p.strip()]


def _scan(folder: Path, exts: tuple[str, ...], recursive: bool, exclude: Path | None) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        if not recursive:
            dirnames[:] = []
        found.extend(here / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in exts)
    return found


def discover(
    inputs: list[str],
    *,
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
    recursive: bool = True,
    stdin: IO[bytes] | None = None,
    null: bool = False,
    exclude: Path | None = None,
) -> Discovery:
    """The images named by `inputs`; `exclude` (the output folder) is never searched."""
    found = Discovery()
    excluded = exclude.resolve() if exclude is not None else None
    pairs: list[tuple[Path, Path]] = []  # (file, its input root)

    def add_path(arg: str, p: Path, from_glob: bool = False) -> None:
        if p.is_dir():
            pairs.extend((f, p) for f in _scan(p, extensions, recursive, excluded))
        elif p.is_file():
            pairs.append((p, p.parent if str(p.parent) else Path(".")))
        elif not from_glob:
            found.errors.append((arg, "no such file or directory"))

    args = list(inputs)
    if "-" in args:
        stream = stdin if stdin is not None else sys.stdin.buffer
        listed = read_list(stream, null)
        args = [a for a in args if a != "-"] + listed
    for arg in args:
        p = Path(arg).expanduser()
        if not p.exists() and _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
            if not matches:
                found.errors.append((arg, "the pattern matches nothing"))
            for m in matches:
                add_path(arg, Path(m), from_glob=True)
        else:
            add_path(arg, p)

    unique: dict[Path, tuple[Path, Path]] = {}  # resolved file → (file as found, its root)
    for f, root in pairs:
        unique.setdefault(f.resolve(), (f, root))
    if not unique:
        return found
    roots = {root.resolve() for _, root in unique.values()}
    common = Path(os.path.commonpath([str(r) for r in roots]))
    # <root relative to the common ancestor> / <file relative to its root> (symlinks inside a root stay put)
    rel = [(f, root.resolve().relative_to(common) / f.relative_to(root)) for f, root in unique.values()]
    stems = Counter(r.with_suffix("") for _, r in rel)
    items = [Item(f, r.with_suffix("") if stems[r.with_suffix("")] == 1 else r) for f, r in rel]
    found.items = sorted(items, key=lambda it: it.name.as_posix())
    return found
