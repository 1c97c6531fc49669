"""Inputs from object stores and web servers, through fsspec (the `[remote]` extra: fsspec, s3fs, aiohttp).

A URL names one object (`s3://bucket/key.jpg`, `https://host/img.jpg`), a prefix to list or, on object
stores, a glob (`io.listing`). Listing gives each object's size and version (its ETag, else its last-modified
time); a URL named directly is asked for them (HEAD). Objects are read whole into memory, never
more than `RemoteOptions.max_bytes` (S3: one ranged GET; HTTP: a stream cut at the limit), then decoded with
the same pixel limit as files (`images.decode_image`).

Bounded: every request has connect and read timeouts (`timeout`), an HTTP object at most 10 × that in all;
timeouts, dropped connections, bodies cut short, 429 and 5xx answers (S3's SlowDown among them) are tried
`retries` more times (0.5 s, 1 s, 2 s … apart), other
failures are that object's one line. Credentials come only from each store's own mechanisms (AWS_* variables,
~/.aws profiles, instance roles; AWS_ENDPOINT_URL_S3 for another S3 API): segcli takes none and logs none.
Redirects are followed to http(s) only (aiohttp refuses others: no `file://`); `file://` URLs, and URLs with
`user:password@`, are refused; signatures in pre-signed URLs are shown and recorded as `…` (`redact`).
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ImageError, MissingExtraError, UsageError, first_line
from ..extras import require

# URL scheme → fsspec protocol (and the packages its store needs)
PROTOCOLS = {"s3": "s3", "s3a": "s3", "http": "http", "https": "http", "gs": "gcs", "gcs": "gcs"}
_PACKAGES = {"s3": ("s3fs", "s3fs"), "http": ("aiohttp", "aiohttp"), "gcs": ("gcsfs", "gcsfs")}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# query parameters of pre-signed URLs that grant access (S3, GCS, Azure SAS): never shown or recorded
_SIGNED = re.compile(
    r"((?:^|[?&])(?:X-Amz-(?:Signature|Credential|Security-Token)|X-Goog-(?:Signature|Credential)|Signature|sig|"
    r"token|access_token)=)[^&#]*",
    re.IGNORECASE,
)


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
    """`url` as it may be shown: without the user and password of its host part (`https://…@host/x.jpg`)
    and the signatures of a pre-signed URL (`?X-Amz-Signature=…`)."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    host = f"…@{host.rsplit('@', 1)[1]}" if "@" in host else host
    base, q, query = path.partition("?")
    return f"{head}{sep}{host}{slash}{base}{q}{_SIGNED.sub(lambda m: m.group(1) + '…', query)}"


def check_scheme(url: str) -> str:
    """The fsspec protocol for `url`; UsageError for `file://` and schemes segcli does not read."""
    s = scheme(url) or ""
    if s == "file":
        raise UsageError(f"{redact(url)}: file:// URLs are not read", hint="give the local path itself")
    if s not in PROTOCOLS:
        raise UsageError(
            f"{redact(url)}: {s}:// is not a store segcli reads", hint="use s3://, gs://, http:// or https://"
        )
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:  # user:password@host: it would be in every record
        raise UsageError(
            f"{redact(url)}: credentials in a URL are not accepted (they would be logged)",
            hint="give them the store's own way (AWS_* variables, ~/.aws profiles, a .netrc for HTTP)",
        )
    return PROTOCOLS[s]


_FILESYSTEMS: dict[tuple[str, RemoteOptions, tuple[tuple[str, str], ...]], Any] = {}
_LOCK = threading.Lock()
# the variables a store reads when its filesystem is made (endpoints, credentials, profiles, proxies)
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCE_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy")


def _store_env() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))


def filesystem(protocol: str, opts: RemoteOptions) -> Any:
    """This process's fsspec filesystem for `protocol` with `opts`' timeouts (one per options and store
    environment: a changed AWS_ENDPOINT_URL or profile makes a new one; thread-safe)."""
    key = (protocol, opts, _store_env())
    with _LOCK:
        fs = _FILESYSTEMS.get(key)
        if fs is None:
            fs = _FILESYSTEMS[key] = _make(protocol, opts)
        return fs


_FRESH = {"skip_instance_cache": True, "use_listings_cache": False}  # every listing asks the store again


def _make(protocol: str, opts: RemoteOptions) -> Any:
    fsspec = require("fsspec", "remote", "reading URLs and object stores")
    module, _ = _PACKAGES[protocol]
    if protocol == "gcs":  # not in the extra: installed by those who need it
        try:
            require(module, "remote", "reading gs:// URLs")
        except MissingExtraError:
            raise MissingExtraError("gcsfs is not installed: it reads gs:// URLs", hint="pip install gcsfs") from None
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
    if isinstance(error, FileNotFoundError) or status == 404 or "NoSuchKey" in str(error):
        return "no such object (404)"
    if isinstance(error, PermissionError) or status == 403:
        return "access denied (403): check the store's credentials and permissions"
    if _timeout(error):
        return f"no answer within {opts.timeout:g} s (--timeout)"
    if "Redirect" in name and "TooMany" not in name:
        return f"redirected to a URL that is not http(s): not followed ({first_line(error)})"
    if isinstance(status, int):
        return f"HTTP {status} {getattr(error, 'message', '') or ''}".rstrip()
    if "Connect" in name or isinstance(error, ConnectionError):
        return f"cannot connect ({first_line(error)})"
    return first_line(error, typed=True)


def _timeout(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or "Timeout" in type(error).__name__ or "timed out" in str(error).lower()


_TRANSIENT_NAMES = ("Connect", "Disconnect", "Payload", "IncompleteRead", "ResponseParser", "SlowDown")


def _transient(error: BaseException) -> bool:
    """Whether trying again may help: timeouts, dropped connections, bodies cut short, 429 and 5xx answers
    (through fsspec's and s3fs's wrappings: a FileNotFoundError from a failed HEAD, an OSError with EBUSY
    for SlowDown / 503 and EREMOTEIO for 500)."""
    if isinstance(error, FileNotFoundError) and error.__cause__ is not None:
        return _transient(error.__cause__)
    status = getattr(error, "status", None)
    name = type(error).__name__
    return (
        _timeout(error)
        or (isinstance(status, int) and (status >= 500 or status == 429))
        or any(n in name for n in _TRANSIENT_NAMES)
        or isinstance(error, ConnectionError)
        or (isinstance(error, OSError) and error.errno in (errno.EBUSY, errno.EREMOTEIO))
        or (error.__cause__ is not None and not isinstance(error, FileNotFoundError) and _transient(error.__cause__))
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
            f"{redact(obj.url)}: {obj.size:,} bytes exceeds the {limit:,}-byte read limit",
            hint="raise --max-pixels if the image is trusted (the limit follows it)",
        )
    try:
        data = b"" if obj.size == 0 else fetch(obj.url, limit + 1, opts)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the store is this object's one line
        raise ImageError(f"{redact(obj.url)}: cannot be read ({describe(e, opts)})") from None
    if len(data) > limit:
        raise ImageError(
            f"{redact(obj.url)}: more than the {limit:,}-byte read limit", hint="raise --max-pixels if trusted"
        )
    return data


def fetch(url: str, n: int, opts: RemoteOptions) -> bytes:
    """At most `n` bytes of `url`, tried again after transient failures (the store's exceptions raised)."""
    protocol = check_scheme(url)
    return bytes(with_retries(lambda: _read(protocol, url, n, opts), opts))


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
