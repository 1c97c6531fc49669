"""What URL arguments name (io.remote reads them): prefixes listed, globs matched, URLs named directly asked
for their size and version, and every object's relative name (the output layout's `rel`).

Names named directly are asked HEAD_THREADS at a time (a URL list of 100 000 objects is not 100 000 requests
in a row). An HTTP folder (a URL ending in `/`) is its index page's links inside that folder, the page read
with a limit (INDEX_BYTES). Listings leave out hidden names below the prefix given (`.trash/x.jpg`), as
folder scans do.
"""

from __future__ import annotations

import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urljoin

from ..errors import MissingExtraError, UsageError
from .remote import (
    RemoteObject,
    RemoteOptions,
    check_scheme,
    describe,
    fetch,
    filesystem,
    fs_path,
    redact,
    version_of,
    with_retries,
)

HEAD_THREADS = 16  # objects named directly: their HEAD requests in flight at once
INDEX_BYTES = 16 << 20  # the most read of an HTTP index page
_GLOB_CHARS = set("*?[")
_HREF = re.compile(r"""<a\s+(?:[^>]*?\s+)?href=["']([^"'#]+)""", re.IGNORECASE)


@dataclass
class Listing:
    """What URL arguments name: objects (each with the URL prefix its name is taken relative to)."""

    objects: list[tuple[RemoteObject, str]]
    errors: list[tuple[str, str]]  # (URL as given, redacted; reason)


def expand(args: list[str], exts: tuple[str, ...], recursive: bool, opts: RemoteOptions) -> Listing:
    """The objects URL arguments name: prefixes listed, globs matched, single URLs asked for their size."""
    found = Listing([], [])
    singles: list[str] = []
    for arg in args:
        try:
            protocol = check_scheme(arg)
        except UsageError as e:
            found.errors.append((redact(arg), str(e).removeprefix(f"{redact(arg)}: ")))
            continue
        try:
            if protocol == "http" and arg.endswith("/"):
                singles += _index(arg, exts, opts)
            elif protocol == "http" or not (arg.endswith("/") or _GLOB_CHARS & set(fs_path(arg))):
                singles.append(arg)  # one object (or a prefix named without its slash: found out by its HEAD)
            elif _GLOB_CHARS & set(fs_path(arg)):
                found.objects.extend(_glob(arg, protocol, exts, opts) or _none(found, arg))
            else:
                found.objects.extend(_find(arg, protocol, exts, recursive, opts))
        except MissingExtraError:
            raise  # the store's package is missing: one line for the run, with the fix
        except Exception as e:  # noqa: BLE001 - a listing that fails is this argument's one line
            found.errors.append((redact(arg), f"cannot be listed ({describe(e, opts)})"))
    _heads(singles, exts, recursive, opts, found)
    return found


def _none(found: Listing, arg: str) -> list[tuple[RemoteObject, str]]:
    found.errors.append((redact(arg), "the pattern matches nothing"))
    return []


def _url(arg: str, path: str) -> str:
    return f"{arg.split('://', 1)[0]}://{path}"


def _wanted(path: str, root: str, exts: tuple[str, ...]) -> bool:
    """An image below `root` (both fsspec paths) with no hidden name on the way."""
    below = path[len(root) :].strip("/").split("/") if path.startswith(root) else [path.rsplit("/", 1)[-1]]
    hidden = any(p.startswith(".") and p not in (".", "..") for p in below)  # `..` parts: refused by `relative`
    return not hidden and PurePosixPath(below[-1]).suffix.lower() in exts


def _glob(arg: str, protocol: str, exts: tuple[str, ...], opts: RemoteOptions) -> list[tuple[RemoteObject, str]]:
    fs = filesystem(protocol, opts)
    pattern = fs_path(arg)
    parts = pattern.split("/")
    fixed = next(i for i, p in enumerate(parts) if _GLOB_CHARS & set(p))
    base = "/".join(parts[:fixed])
    hits = with_retries(lambda: fs.glob(pattern, detail=True), opts)
    return [
        (RemoteObject(_url(arg, p), info.get("size"), version_of(info)), _url(arg, base))
        for p, info in sorted(hits.items())
        if info.get("type") == "file" and _wanted(p, base, exts)
    ]


def _find(
    arg: str, protocol: str, exts: tuple[str, ...], recursive: bool, opts: RemoteOptions
) -> list[tuple[RemoteObject, str]]:
    """A prefix's objects (recursively unless not `recursive`)."""
    fs = filesystem(protocol, opts)
    base = fs_path(arg).rstrip("/")
    hits = with_retries(lambda: fs.find(base + "/", detail=True, maxdepth=None if recursive else 1), opts)
    return [
        (RemoteObject(_url(arg, p), info.get("size"), version_of(info)), arg.rstrip("/"))
        for p, info in sorted(hits.items())
        if info.get("type") == "file" and _wanted(p, base, exts)
    ]


def _index(folder: str, exts: tuple[str, ...], opts: RemoteOptions) -> list[str]:
    """The images an HTTP index page links to inside its folder (the page read with a limit)."""
    page = fetch(folder, INDEX_BYTES, opts)
    if len(page) >= INDEX_BYTES:
        raise ValueError(f"the index page exceeds {INDEX_BYTES >> 20} MiB")
    links = {urljoin(folder, m.group(1)) for m in _HREF.finditer(page.decode("utf-8", "replace"))}
    return sorted(u for u in links if u.startswith(folder) and _wanted(u.split("?", 1)[0], folder, exts))


def _heads(urls: list[str], exts: tuple[str, ...], recursive: bool, opts: RemoteOptions, found: Listing) -> None:
    """Size and version of each URL named directly (HEAD requests, HEAD_THREADS at a time); an object-store
    name that turns out to be a prefix is listed."""
    if not urls:
        return

    def head(url: str) -> tuple[str, dict[str, Any] | str]:
        try:
            fs = filesystem(check_scheme(url), opts)
            return url, with_retries(lambda: fs.info(fs_path(url)), opts)
        except MissingExtraError:
            raise
        except Exception as e:  # noqa: BLE001 - this URL's one line
            return url, describe(e, opts)

    with ThreadPoolExecutor(min(HEAD_THREADS, len(urls))) as pool:
        answers = list(pool.map(head, dict.fromkeys(urls)))
    for url, info in answers:
        if isinstance(info, str):
            found.errors.append((redact(url), f"cannot be read ({info})"))
        elif info.get("type") == "directory" and check_scheme(url) != "http":
            try:
                found.objects.extend(_find(url, check_scheme(url), exts, recursive, opts))
            except Exception as e:  # noqa: BLE001 - this prefix's one line
                found.errors.append((redact(url), f"cannot be listed ({describe(e, opts)})"))
        else:
            found.objects.append((RemoteObject(url, info.get("size"), version_of(info)), _folder(url)))


def _folder(url: str) -> str:
    """The URL of the folder `url` is in (`scheme://host` for an object at the top)."""
    s, rest = url.split("://", 1)
    path = rest.split("?", 1)[0] if s.lower() in ("http", "https") else rest
    head, _, _ = path.rstrip("/").rpartition("/")
    return f"{s}://{head or path.split('/', 1)[0]}"


def relative(
    pairs: list[tuple[RemoteObject, str]], full: bool
) -> tuple[list[tuple[RemoteObject, PurePosixPath]], list[tuple[str, str]]]:
    """Each object's relative name: `<its root relative to the roots' common prefix>/<the rest of its URL>`
    (`full`: `<scheme>/<host or bucket>/<path>`, when local inputs share the run); objects whose name has an
    empty, `.` or `..` part are refused (their outputs could land outside --out)."""
    named, errors = [], []
    unique = {obj.url: (obj, root) for obj, root in pairs}
    split = {url: _parts(url) for url in unique}
    roots = {root: _parts(root) for _, root in unique.values()}
    common = 0 if full or not roots else _common(list(roots.values()))
    for url, (obj, root) in unique.items():
        parts, base = split[url], roots[root]
        if parts[: len(base)] != base or len(base) >= len(parts):
            base = parts[:-1]  # (an HTTP redirect aside, every object lies under its root)
        rel = parts[min(common, len(base)) :]
        if not rel or any(p in ("", ".", "..") for p in rel):
            errors.append(
                (redact(url), "its name has an empty, '.' or '..' part: outputs cannot be named inside --out")
            )
        else:
            named.append((obj, PurePosixPath(*rel)))
    return named, errors


def _parts(url: str) -> list[str]:
    """`https://h/k/x.jpg?v=1` → [https, h, k, x_<crc of v=1>.jpg]: a query makes the name its own (HTTP
    only: `?` is a character of object-store keys)."""
    s, _, rest = url.partition("://")
    web = s.lower() in ("http", "https")
    path, _, query = rest.partition("?") if web else (rest, "", "")
    parts = [s.lower(), *path.rstrip("/").split("/")] if path.rstrip("/") else [s.lower()]
    if query and len(parts) > 2:
        stem = PurePosixPath(parts[-1])
        parts[-1] = f"{stem.stem}_{zlib.crc32(query.encode()):08x}{stem.suffix}"
    return parts


def _common(lists: list[list[str]]) -> int:
    """How many leading parts all of `lists` share."""
    n = min(len(p) for p in lists)
    first = lists[0]
    return next((i for i in range(n) if any(p[i] != first[i] for p in lists)), n)
