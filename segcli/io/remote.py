"""Inputs from object stores and web servers, through fsspec (the `[remote]` extra: fsspec, s3fs, aiohttp).

A URL names one object (`s3://bucket/key.jpg`, `https://host/img.jpg`), a prefix to list (`s3://bucket/dir/`,
recursively unless --no-recursive; an HTTP folder is read from its index page's links) or, on object stores, a
glob (`s3://bucket/**/*.jpg`). Listing gives each object's size and version (its ETag, else its last-modified
time); a URL named directly is asked for them (HEAD, 16 at a time). Objects are read whole into memory, never
more than `RemoteOptions.max_bytes` (S3: one ranged GET; HTTP: a stream cut at the limit), then decoded with
the same pixel limit as files (`images.decode_image`).

Bounded: every request has connect and read timeouts (`timeout`), an HTTP object at most 10 × that in all;
timeouts, dropped connections and 5xx answers are tried `retries` more times (0.5 s, 1 s, 2 s … apart), other
failures are that object's one line. Credentials come only from each store's own mechanisms (AWS_* variables,
~/.aws profiles, instance roles; AWS_ENDPOINT_URL_S3 for another S3 API): segcli takes none and logs none.
Redirects are followed to http(s) only (aiohttp refuses others: no `file://`); `file://` URLs are refused.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..errors import ImageError, UsageError, first_line
from ..extras import require

# URL scheme → fsspec protocol (and the packages its store needs)
PROTOCOLS = {"s3": "s3", "s3a": "s3", "http": "http", "https": "http", "gs": "gcs", "gcs": "gcs"}
_PACKAGES = {"s3": ("s3fs", "s3fs"), "http": ("aiohttp", "aiohttp"), "gcs": ("gcsfs", "gcsfs")}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB_CHARS = set("*?[")
HEAD_THREADS = 16  # URLs named directly: their HEAD requests in flight at once


@dataclass(frozen=True)
class RemoteOptions:
    timeout: float = 30.0  # seconds without an answer (connect, or between reads) before an attempt fails
    retries: int = 2  # further attempts after a timeout, a dropped connection or a 5xx answer
    max_bytes: int = 1 << 30  # the most bytes read of one object


@dataclass(frozen=True)
class RemoteObject:
    url: str
    size: int | None  # bytes, when the store said
    version: str | None  # "etag:<ETag>" or "modified:<Last-Modified>", when the store said


def scheme(text: str) -> str | None:
    """The URL scheme of `text` (lower case), None for a local path."""
    m = _SCHEME.match(text)
    return m.group(1).lower() if m else None


def redact(url: str) -> str:
    """`url` without the user and password its host part may carry (`https://…@host/x.jpg`)."""
    head, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{head}{sep}…@{host.rsplit('@', 1)[1]}{slash}{path}" if sep and "@" in host else url


def check_scheme(url: str) -> str:
    """The fsspec protocol for `url`; UsageError for `file://` and schemes segcli does not read."""
    s = scheme(url) or ""
    if s == "file":
        raise UsageError(f"{url}: file:// URLs are not read", hint="give the local path itself")
    if s not in PROTOCOLS:
        raise UsageError(f"{url}: {s}:// is not a store segcli reads", hint="use s3://, gs://, http:// or https://")
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:  # user:password@host: it would be in every record
        raise UsageError(
            f"{redact(url)}: credentials in a URL are not accepted (they would be logged)",
            hint="give them the store's own way (AWS_* variables, ~/.aws profiles, a .netrc for HTTP)",
        )
    return PROTOCOLS[s]


_FILESYSTEMS: dict[tuple[str, RemoteOptions], Any] = {}
_LOCK = threading.Lock()


def filesystem(protocol: str, opts: RemoteOptions) -> Any:
    """This process's fsspec filesystem for `protocol` with `opts`' timeouts (one per options, thread-safe)."""
    with _LOCK:
        fs = _FILESYSTEMS.get((protocol, opts))
        if fs is None:
            fs = _FILESYSTEMS[(protocol, opts)] = _make(protocol, opts)
        return fs


_FRESH = {"skip_instance_cache": True, "use_listings_cache": False}  # every listing asks the store again


def _make(protocol: str, opts: RemoteOptions) -> Any:
    fsspec = require("fsspec", "remote", "reading URLs and object stores")
    module, _ = _PACKAGES[protocol]
    require(module, "remote", f"reading {protocol} URLs")
    t = opts.timeout
    if protocol == "http":
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=10 * t, connect=t, sock_connect=t, sock_read=t)
        return fsspec.filesystem("http", client_kwargs={"timeout": timeout}, **_FRESH)
    if protocol == "s3":  # segcli retries (`read`); botocore and s3fs try once each
        config = {"connect_timeout": t, "read_timeout": t, "retries": {"max_attempts": 1}}
        fs = fsspec.filesystem("s3", config_kwargs=config, **_FRESH)
        fs.retries = 1  # s3fs's own retry loop (a class attribute)
        return fs
    return fsspec.filesystem(protocol, **_FRESH)


def fs_path(url: str) -> str:
    """The path fsspec takes: the URL itself over HTTP, `bucket/key` on object stores."""
    return url if check_scheme(url) == "http" else url.split("://", 1)[1]


def version_of(info: dict[str, Any]) -> str | None:
    for key in ("ETag", "etag"):
        if info.get(key):
            return f"etag:{info[key]}"
    for key in ("LastModified", "Last-Modified", "last_modified", "mtime", "updated"):
        if info.get(key):
            return f"modified:{info[key]}"
    return None


def describe(error: BaseException, opts: RemoteOptions) -> str:
    """One line saying what went wrong with a request (no credentials: stores do not put them in errors)."""
    if isinstance(error, FileNotFoundError) and error.__cause__ is not None:  # fsspec's HEAD/GET that failed
        return describe(error.__cause__, opts)
    name = type(error).__name__
    status = getattr(error, "status", None)
    if "NoSuchBucket" in str(error):
        return "no such bucket"
    if isinstance(error, FileNotFoundError) or status == 404:
        return "no such object (404)"
    if isinstance(error, PermissionError) or status == 403:
        return "access denied (403): check the store's credentials and permissions"
    if _timeout(error):
        return f"no answer within {opts.timeout:g} s (--timeout)"
    if "Redirect" in name:
        return f"redirected to a URL that is not http(s): not followed ({first_line(error)})"
    if isinstance(status, int):
        return f"HTTP {status} {getattr(error, 'message', '') or ''}".rstrip()
    if "Connect" in name or isinstance(error, ConnectionError):
        return f"cannot connect ({first_line(error)})"
    return first_line(error, typed=True)


def _timeout(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or "Timeout" in type(error).__name__ or "timed out" in str(error).lower()


def _transient(error: BaseException) -> bool:
    status = getattr(error, "status", None)
    name = type(error).__name__
    return (
        _timeout(error)
        or (isinstance(status, int) and status >= 500)
        or "Connect" in name
        or "Disconnect" in name
        or isinstance(error, ConnectionError)
    )


def with_retries(call: Callable[[], Any], opts: RemoteOptions, sleep: Callable[[float], None] = time.sleep) -> Any:
    """`call()`, tried again after transient failures (at most `opts.retries` more times)."""
    for attempt in range(opts.retries + 1):
        try:
            return call()
        except Exception as e:  # classified: transient ones are retried, the rest raised
            if attempt == opts.retries or not _transient(e):
                raise
            sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def read(obj: RemoteObject, opts: RemoteOptions) -> bytes:
    """The object's bytes (ImageError naming the URL when it cannot be read or exceeds `max_bytes`)."""
    limit = opts.max_bytes
    if obj.size is not None and obj.size > limit:
        raise ImageError(
            f"{obj.url}: {obj.size:,} bytes exceeds the {limit:,}-byte read limit",
            hint="raise --max-pixels if the image is trusted (the limit follows it)",
        )
    protocol = check_scheme(obj.url)
    try:
        data = b"" if obj.size == 0 else with_retries(lambda: _read(protocol, obj.url, limit + 1, opts), opts)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the store is this object's one line
        raise ImageError(f"{obj.url}: cannot be read ({describe(e, opts)})") from None
    if len(data) > limit:
        raise ImageError(f"{obj.url}: more than the {limit:,}-byte read limit", hint="raise --max-pixels if trusted")
    return data


def _read(protocol: str, url: str, n: int, opts: RemoteOptions) -> bytes:
    """At most `n` bytes of `url`."""
    fs = filesystem(protocol, opts)
    if protocol != "http":
        return bytes(fs.cat_file(fs_path(url), start=0, end=n))
    chunks, got = [], 0
    # block_size 0: a stream (never more than n bytes in memory); a size given keeps fsspec from a HEAD first
    with fs.open(url, "rb", block_size=0, size=n) as f:
        while got < n:
            chunk = f.read(min(n - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    return b"".join(chunks)


@dataclass
class Listing:
    """What one URL argument names: objects (each with the URL prefix its name is taken relative to)."""

    objects: list[tuple[RemoteObject, str]]
    errors: list[tuple[str, str]]  # (URL as given, reason)


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
            if protocol == "http" and not arg.endswith("/"):
                singles.append(arg)  # ? and * belong to URLs: no globs over HTTP
            elif protocol != "http" and _GLOB_CHARS & set(fs_path(arg)):
                found.objects.extend(_glob(arg, protocol, exts, opts) or _none(found, arg))
            else:
                found.objects.extend(_listed(arg, protocol, exts, recursive, opts, singles))
        except Exception as e:  # noqa: BLE001 - a listing that fails is this argument's one line
            what = "cannot be listed" if arg.endswith("/") or _GLOB_CHARS & set(arg) else "cannot be read"
            found.errors.append((arg, f"{what} ({describe(e, opts)})"))
    _heads(singles, opts, found)
    return found


def _none(found: Listing, arg: str) -> list[tuple[RemoteObject, str]]:
    found.errors.append((arg, "the pattern matches nothing"))
    return []


def _url(protocol: str, arg: str, path: str) -> str:
    return path if protocol == "http" else f"{arg.split('://', 1)[0]}://{path}"


def _wanted(path: str, exts: tuple[str, ...]) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return not name.startswith(".") and PurePosixPath(name).suffix.lower() in exts


def _glob(arg: str, protocol: str, exts: tuple[str, ...], opts: RemoteOptions) -> list[tuple[RemoteObject, str]]:
    fs = filesystem(protocol, opts)
    pattern = fs_path(arg)
    parts = pattern.split("/")
    fixed = next(i for i, p in enumerate(parts) if _GLOB_CHARS & set(p))
    root = _url(protocol, arg, "/".join(parts[:fixed]))
    hits = with_retries(lambda: fs.glob(pattern, detail=True), opts)
    return [
        (RemoteObject(_url(protocol, arg, p), info.get("size"), version_of(info)), root)
        for p, info in sorted(hits.items())
        if info.get("type") == "file" and _wanted(p, exts)
    ]


def _listed(
    arg: str, protocol: str, exts: tuple[str, ...], recursive: bool, opts: RemoteOptions, singles: list[str]
) -> Iterator[tuple[RemoteObject, str]]:
    """A prefix's objects (an argument that names one object goes to `singles`)."""
    fs = filesystem(protocol, opts)
    path = fs_path(arg)
    if not arg.endswith("/"):
        info = with_retries(lambda: fs.info(path), opts)
        if info.get("type") != "directory":
            yield RemoteObject(arg, info.get("size"), version_of(info)), arg.rsplit("/", 1)[0]
            return
    root = arg.rstrip("/")
    if protocol == "http":  # an index page's links; HTTP has no recursive listing
        hits = {e["name"]: e for e in with_retries(lambda: fs.ls(path, detail=True), opts)}
    else:
        hits = with_retries(lambda: fs.find(path, detail=True, maxdepth=None if recursive else 1), opts)
    for p, info in sorted(hits.items()):
        if info.get("type") == "file" and _wanted(p, exts):
            url = _url(protocol, arg, p)
            if protocol == "http" and not url.startswith(root + "/"):
                continue  # an index page's link to elsewhere: not inside the folder
            if protocol == "http":
                singles.append(url)
            else:
                yield RemoteObject(url, info.get("size"), version_of(info)), root


def _heads(urls: list[str], opts: RemoteOptions, found: Listing) -> None:
    """Size and version of each URL named directly (HEAD requests, HEAD_THREADS at a time)."""
    if not urls:
        return
    fs = filesystem("http", opts)

    def head(url: str) -> tuple[str, dict[str, Any] | str]:
        try:
            return url, with_retries(lambda: fs.info(url), opts)
        except Exception as e:  # noqa: BLE001 - this URL's one line
            return url, describe(e, opts)

    with ThreadPoolExecutor(min(HEAD_THREADS, len(urls))) as pool:
        for url, info in pool.map(head, dict.fromkeys(urls)):
            if isinstance(info, str):
                found.errors.append((url, f"cannot be read ({info})"))
            else:
                folder = url.split("?", 1)[0].rsplit("/", 1)[0]
                found.objects.append((RemoteObject(url, info.get("size"), version_of(info)), folder))


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
        if parts[: len(base)] != base:
            base = parts[:-1]  # (an HTTP redirect aside, every object lies under its root)
        rel = parts[min(common, len(base)) :]
        if not rel or any(p in ("", ".", "..") for p in rel):
            errors.append((url, "its name has an empty, '.' or '..' part: outputs cannot be named inside --out"))
        else:
            named.append((obj, PurePosixPath(*rel)))
    return named, errors


def _parts(url: str) -> list[str]:
    """`s3://b/k/x.jpg?v=1` → [s3, b, k, x_<crc of v=1>.jpg]: a query makes the name its own."""
    s, rest = url.split("://", 1)
    path, _, query = rest.partition("?")
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
