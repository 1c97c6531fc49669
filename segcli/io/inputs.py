"""Input discovery for batch prediction: files, folders, glob patterns and `-` (paths on stdin).

Every image gets a relative path `rel`: its path relative to the *input root* it came from — a folder
argument is its own root; files named directly, by a glob or on stdin have their folder as root — taken
relative to the common ancestor of all roots, so two different images never share one. Output names are
derived from these by `layout.assign_bases` (injective). The order is deterministic (sorted by `rel`); an
image named twice is processed once.

Only regular files are read: FIFOs, sockets and devices are skipped with a note (opening one would block),
unreadable folders are reported as failures, and `**` globs never walk a folder twice (symlink loops).
Folder scans leave out what segcli wrote itself: subfolders holding a run summary, and PNGs carrying its
fingerprint (an earlier run's masks inside the input folder are not images to segment).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from ..errors import UsageError
from ..fsutil import read_regular
from .layout import RUN_FILES, assign_bases
from .outputs import read_fingerprint
from .remote import RemoteObject, RemoteOptions, redact, scheme
from .video import VIDEO_EXTENSIONS

RUN_SCHEMA = "segcli.run/1"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# videos (batch.video makes frames of them); .ts only when named or asked for: TypeScript sources share it
DEFAULT_EXTENSIONS = IMAGE_EXTENSIONS + tuple(e for e in VIDEO_EXTENSIONS if e != ".ts")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Item:
    path: Path  # the image as given (or found)
    name: PurePosixPath  # output base relative to --out: <relative folder>/<stem> (see layout)
    rel: PurePosixPath = field(default_factory=PurePosixPath)  # <relative folder>/<file name>: unique per input
    frame: int | None = None  # a video's frame (batch.video): its number, from 0 in presentation order
    time: float | None = None  # … and its timestamp, seconds from the first frame
    remote: RemoteObject | None = None  # an object read from a URL (io.remote); `path` is then its `rel`

    @property
    def source(self) -> str:
        """The input as records and messages name it: its path, or its URL."""
        return redact(self.remote.url) if self.remote is not None else str(self.path)

    @property
    def key(self) -> str:
        """What tells this input's records apart (a video's frames share its path)."""
        return self.source if self.frame is None else f"{self.source}#{self.frame}"


@dataclass
class Discovery:
    items: list[Item] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (input as given, reason)
    skipped: list[str] = field(default_factory=list)  # notes: non-regular files left out
    own_outputs: int = 0  # PNGs segcli wrote (they carry its fingerprint), left out of folder scans
    own_folders: list[Path] = field(default_factory=list)  # output folders of earlier runs, not searched
    roots: set[Path] = field(default_factory=set)  # the input roots (folders given, folders of files given)
    prefixes: set[str] = field(default_factory=set)  # URL prefixes listed (io.remote), and folders of URLs named


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
    """Stable assignment by relative path: shards partition the inputs, and adding files moves no others."""
    if shard is None:
        return True
    return zlib.crc32(item.rel.as_posix().encode("utf-8", "surrogateescape")) % shard[1] == shard[0]


def read_list(stream: IO[bytes], null: bool) -> list[str]:
    data = stream.read()
    parts = data.split(b"\0") if null else data.splitlines()
    return [os.fsdecode(p.rstrip(b"\r") if not null else p) for p in parts if p.strip()]


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _not_regular(path: Path) -> str:
    """Why `path` (which is no regular file) is skipped."""
    if path.is_symlink() and not os.path.exists(path):
        return f"{path}: a symbolic link to nothing (dangling): skipped"
    return f"{path}: not a regular file (FIFO, socket or device): skipped"


def _run_folder(folder: Path) -> bool:
    """Whether `folder` holds the summary of a segcli run (an earlier run's output folder)."""
    try:
        names = [e.name for e in os.scandir(folder) if e.name.startswith("summary") and e.name.endswith(".json")]
    except OSError:
        return False
    for name in names:
        if not RUN_FILES.fullmatch(name):
            continue
        try:
            doc = json.loads(read_regular(folder / name, 64 << 20))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(doc, dict) and doc.get("schema") == RUN_SCHEMA:
            return True
    return False


class _Walk:
    """Folder scans and `**` globs of one discovery, with the problems they meet."""

    def __init__(self, found: Discovery, exts: tuple[str, ...], recursive: bool, exclude: Path | None) -> None:
        self.found, self.exts, self.recursive, self.exclude = found, exts, recursive, exclude

    def scan(self, folder: Path) -> list[Path]:
        """Image files under `folder` (hidden names and the excluded folder left out; symlinked folders not
        followed, symlinked files are)."""
        out, stack = [], [folder]
        while stack:
            here = stack.pop()
            try:
                entries = sorted(os.scandir(here), key=lambda e: e.name)
            except OSError as e:
                self.found.errors.append((str(here), f"cannot read folder ({e.strerror or e})"))
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = here / entry.name
                if entry.is_dir(follow_symlinks=False):
                    if self.recursive and not self._excluded(path):
                        if _run_folder(path):
                            self.found.own_folders.append(path)
                        else:
                            stack.append(path)
                elif Path(entry.name).suffix.lower() in self.exts:
                    if not _regular(path):
                        self.found.skipped.append(_not_regular(path))
                    elif path.suffix.lower() == ".png" and read_fingerprint(path) is not None:
                        self.found.own_outputs += 1
                    else:
                        out.append(path)
        return out

    def _excluded(self, path: Path) -> bool:
        return self.exclude is not None and path.resolve() == self.exclude

    def glob(self, pattern: str) -> list[Path]:
        """Paths matching `pattern` (`*`, `?`, `[…]` within a name, `**` across folders), each folder visited
        at most once."""
        parts = Path(os.path.expanduser(pattern)).parts
        fixed = next((i for i, p in enumerate(parts) if _GLOB_CHARS & set(p)), len(parts))
        root = Path(*parts[:fixed]) if fixed else Path(".")
        out: list[Path] = []
        self._match(root, list(parts[fixed:]), out, set())
        return sorted(out)

    def _match(self, here: Path, rest: list[str], out: list[Path], seen: set[tuple[int, int, int]]) -> None:
        if not rest:
            out.append(here)
            return
        try:
            st = here.stat()
            if (st.st_dev, st.st_ino, len(rest)) in seen:
                return
            seen.add((st.st_dev, st.st_ino, len(rest)))
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            return
        head, tail = rest[0], rest[1:]
        if head == "**":
            self._match(here, tail, out, seen)  # zero folders
            for e in entries:
                if not e.name.startswith(".") and e.is_dir() and not self._excluded(here / e.name):
                    if _run_folder(here / e.name):
                        self.found.own_folders.append(here / e.name)
                    else:
                        self._match(here / e.name, rest, out, seen)
            return
        regex = re.compile(fnmatch.translate(head))
        for e in entries:
            if (e.name.startswith(".") and not head.startswith(".")) or not regex.match(e.name):
                continue
            if (not tail or e.is_dir()) and not self._excluded(here / e.name):
                self._match(here / e.name, tail, out, seen)


def _args(inputs: list[str], stdin: IO[bytes] | None, null: bool) -> list[str]:
    args = list(inputs)
    if "-" in args:
        stream = stdin if stdin is not None else sys.stdin.buffer
        args = [a for a in args if a != "-"] + read_list(stream, null)
    return args


def discover(
    inputs: list[str],
    *,
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
    recursive: bool = True,
    stdin: IO[bytes] | None = None,
    null: bool = False,
    exclude: Path | None = None,
    remote: RemoteOptions | None = None,
) -> Discovery:
    """The images named by `inputs` (paths, or URLs read with `remote`); `exclude` (the output folder) is
    never searched."""
    found = Discovery()
    walk = _Walk(found, extensions, recursive, exclude.resolve() if exclude is not None else None)
    pairs: list[tuple[Path, Path]] = []  # (file, its input root)
    args = _args(inputs, stdin, null)
    urls = [a for a in args if scheme(a) is not None]
    for arg in (a for a in args if scheme(a) is None):
        p = Path(arg).expanduser()
        globbed = not os.path.lexists(p) and bool(_GLOB_CHARS & set(arg))
        matches = walk.glob(arg) if globbed else [p]
        if globbed and not matches:
            found.errors.append((arg, "the pattern matches nothing"))
        for m in matches:
            try:
                _add(m, arg, globbed, found, walk, pairs)
            except OSError as e:  # a folder on the way that cannot be entered, say
                found.errors.append((arg, f"cannot be read ({e.strerror or e})"))
    named = _remote(urls, extensions, recursive, remote or RemoteOptions(), found, full=bool(pairs))
    found.items = _items(pairs, named, found)
    return found


def _remote(
    urls: list[str], exts: tuple[str, ...], recursive: bool, opts: RemoteOptions, found: Discovery, full: bool
) -> list[tuple[RemoteObject, PurePosixPath]]:
    """The objects URL arguments name, with their relative names (io.remote)."""
    if not urls:
        return []
    from .listing import expand, relative

    listing = expand(urls, exts, recursive, opts)
    found.prefixes.update(root.rstrip("/") for _, root in listing.objects)
    named, refused = relative(listing.objects, full)
    found.errors.extend(listing.errors + refused)
    return named


def _add(m: Path, arg: str, globbed: bool, found: Discovery, walk: _Walk, pairs: list[tuple[Path, Path]]) -> None:
    """One path an argument names: a folder to scan, a file, or what is skipped or wrong with it."""
    if m.is_dir():
        found.roots.add(m.resolve())
        pairs.extend((f, m) for f in walk.scan(m))
    elif globbed and m.suffix.lower() == ".png" and read_fingerprint(m) is not None:
        found.own_outputs += 1  # a pattern that also matches earlier masks: those are not inputs
    elif _regular(m):
        found.roots.add(m.parent.resolve())
        pairs.append((m, m.parent if str(m.parent) else Path(".")))
    elif os.path.lexists(m) and (m.is_symlink() or m.exists()):
        found.skipped.append(_not_regular(m))
    elif not globbed:
        found.errors.append((arg, _missing(m)))


def _missing(m: Path) -> str:
    """Why a path named directly is not there: no such file, or a folder on the way that cannot be entered."""
    try:
        m.stat()
    except FileNotFoundError:
        return "no such file or directory"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return "no such file or directory"


def _items(
    pairs: list[tuple[Path, Path]], named: list[tuple[RemoteObject, PurePosixPath]], found: Discovery
) -> list[Item]:
    """Files (with their roots) and named objects as items, in order of their relative names."""
    unique: dict[Path, tuple[Path, Path]] = {}  # resolved file → (file as found, its root)
    for f, root in pairs:
        unique.setdefault(f.resolve(), (f, root))
    listed: dict[PurePosixPath, tuple[Path, RemoteObject | None]] = {}
    if unique:
        roots = {root.resolve() for _, root in unique.values()}
        common = Path(os.path.commonpath([str(r) for r in roots]))
        # <root relative to the common ancestor> / <file relative to its root> (symlinks inside a root stay put)
        for f, root in unique.values():
            listed[PurePosixPath((root.resolve().relative_to(common) / f.relative_to(root)).as_posix())] = (f, None)
    for obj, rel in named:
        if rel in listed:
            found.errors.append((obj.url, f"has the same name ({rel}) as another input: give it in a run of its own"))
        else:
            listed[rel] = (Path(rel), obj)
    ordered = sorted(listed.items(), key=lambda t: t[0].as_posix())
    bases = assign_bases([rel for rel, _ in ordered])
    return [Item(f, base, rel, remote=obj) for (rel, (f, obj)), base in zip(ordered, bases, strict=True)]
