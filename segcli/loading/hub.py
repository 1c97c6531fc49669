"""Registry spec / repo id → local file through huggingface_hub (standard HF cache, revisions, offline, sha256).

The environment is read at call time (not at import, as huggingface_hub's constants are), so HF_HOME,
HF_HUB_CACHE, HF_HUB_OFFLINE, HF_ENDPOINT and HF_TOKEN apply to every call as they are set then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..errors import CheckpointError, DownloadError, EntryMissingError, IntegrityError, NotCachedError, first_line
from ..fsutil import atomic_path, atomic_write_bytes, read_regular, require_regular

_TRUE = {"1", "ON", "YES", "TRUE"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def cache_dir() -> Path:
    """The huggingface_hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _describe(repo: str, revision: str | None, filename: str) -> str:
    return f"{repo}@{revision or 'main'}:{filename}"


CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0  # for the first answer of a server that accepted the connection (HF_HUB_ETAG_TIMEOUT)
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def unreachable(url: str) -> str | None:
    """Why `url`'s host cannot be connected to within a few seconds (name not resolved, connection refused,
    timed out) or sends no HTTP answer (see `_silent`), or None. Asked once before huggingface_hub, whose retries would take half a minute to say
    the same. Behind a proxy the answer is left to the proxy (None)."""
    if any(os.environ.get(v) for v in _PROXIES):
        return None
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    try:
        socket.create_connection(
            (u.hostname, u.port or (443 if u.scheme == "https" else 80)), CONNECT_TIMEOUT_S
        ).close()
    except socket.gaierror:
        return f"cannot resolve {u.hostname}"
    except TimeoutError:
        return f"no answer from {u.hostname} within {CONNECT_TIMEOUT_S:.0f} s"
    except OSError as e:
        return f"{u.hostname}: {e.strerror or e}"
    return _silent(f"{u.scheme}://{u.netloc}/", u.hostname)


def read_timeout() -> float:
    """huggingface_hub's own setting for metadata requests, `HF_HUB_ETAG_TIMEOUT` (seconds, 10 by default,
    as theirs), so that one setting bounds both waits."""
    try:
        value = float(os.environ.get("HF_HUB_ETAG_TIMEOUT", READ_TIMEOUT_S))
    except ValueError:
        return READ_TIMEOUT_S
    return value if 0 < value <= 3600 else READ_TIMEOUT_S


def _silent(origin: str, host: str) -> str | None:
    """Why a server that accepts connections is no use: it sends no HTTP answer within `READ_TIMEOUT_S`
    (a hung or wrong service; huggingface_hub would wait and retry for minutes). Any answer, an error
    status or a TLS failure included, is left to huggingface_hub (None)."""
    import urllib.error
    import urllib.request

    wait = read_timeout()
    silent = f"{host} accepts connections but sent no answer within {wait:g} s"
    try:
        urllib.request.urlopen(urllib.request.Request(origin, method="HEAD"), timeout=wait).close()
    except TimeoutError:
        return silent
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            return silent
    except Exception:  # noqa: BLE001 - an answer of some kind: huggingface_hub says what it means
        pass
    return None


def missing_hint(get: str) -> str:
    """What to do when a file is neither cached nor downloadable here (several lines)."""
    return (
        f"where the Hub is reachable, fetch it into the cache:  {get}\n"
        f"then use that cache offline (copy ~/.cache/huggingface or set HF_HUB_CACHE):  HF_HUB_OFFLINE=1 segcli ...\n"
        "or run a model you have as files:  --model DIR (config.json + model.safetensors, as save_pretrained writes)"
    )


def fetch(
    repo: str, filename: str, revision: str | None = None, *, force: bool = False, name: str | None = None
) -> Path:
    """Path of `filename` from `repo` at `revision`, downloaded into the HF cache when not there yet.

    Raises DownloadError with what is missing and how to get it (offline, unknown repo/revision/file, network).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = _describe(repo, revision, filename)
    get = f"segcli download {name}" if name else f"segcli download {repo}" + (f"@{revision}" if revision else "")
    why = None if offline() else unreachable(endpoint() or "https://huggingface.co")
    if why is not None and force:
        raise DownloadError(
            f"{what}: cannot download again: the Hub ({endpoint() or 'https://huggingface.co'}) cannot be reached ({why})",
            hint="check the network or HF_ENDPOINT; without --force the cached copy is used",
        )
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings: the one error line below says what happened
    try:
        path = hf_hub_download(
            repo,
            filename,
            revision=revision,
            cache_dir=cache_dir(),
            force_download=force,
            local_files_only=offline() or why is not None,
            endpoint=endpoint(),
        )
    except LocalEntryNotFoundError:
        hub = endpoint() or "https://huggingface.co"
        if offline():
            problem = f"{what} is not in the Hugging Face cache ({cache_dir()}) and HF_HUB_OFFLINE is set"
        else:
            problem = f"{what} is not cached and the Hub ({hub}) cannot be reached" + (f" ({why})" if why else "")
        raise NotCachedError(problem, hint=missing_hint(get)) from None
    except GatedRepoError:
        raise DownloadError(
            f"{what}: the repository is gated", hint="accept its terms on the Hub and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise DownloadError(
            f"{what}: repository {repo!r} not found", hint="check the name; private repositories need HF_TOKEN"
        ) from None
    except RevisionNotFoundError:
        raise DownloadError(f"{what}: revision {revision!r} not found in {repo}") from None
    except EntryNotFoundError:
        raise EntryMissingError(f"{what}: the repository has no file {filename!r} at that revision") from None
    except HfHubHTTPError as e:
        raise DownloadError(f"{what}: download failed ({first_line(e)})") from None
    except OSError as e:  # network errors below the HTTP layer, disk full, permissions
        raise DownloadError(f"{what}: download failed ({e})") from None
    finally:
        hub_log.setLevel(level)
    return Path(path)


def try_cached(repo: str, filename: str, revision: str | None = None) -> Path | None:
    """The cached file, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir(), revision=revision)
    return Path(found) if isinstance(found, str) else None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 of a regular file (OSError for a FIFO, a device or a socket: they would block or never end),
    read up to the size it had when checked."""
    left = require_regular(path).st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while left > 0 and (block := f.read(min(chunk, left))):
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def segcli_cache() -> Path:
    """segcli's own cache: $SEGCLI_CACHE, else $XDG_CACHE_HOME/segcli, else ~/.cache/segcli."""
    base = os.environ.get("SEGCLI_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "segcli")
    return Path(base).expanduser()


def _stamp_file() -> Path:
    return segcli_cache() / "verified.json"


def _stamp_key(path: Path) -> str:
    """What identifies one version of a file: path, inode, size, mtime and ctime (a file rewritten in place
    with its old size and mtime restored still gets a new ctime)."""
    st = require_regular(path)
    return f"{path.resolve()}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _read_stamps() -> dict[str, str]:
    """The remembered digests; the file is a cache, not truth: anything malformed is ignored."""
    try:
        data = json.loads(read_regular(_stamp_file(), 64 << 20))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and _HEX64.fullmatch(v)}


def _write_stamp(key: str, digest: str) -> None:
    """Remember a verified (file, size, mtime) → sha256; best effort (a read-only home only costs time)."""
    target = _stamp_file()
    try:
        stamps = _read_stamps()
        stamps[key] = digest
        atomic_write_bytes(target, json.dumps(stamps).encode())
    except OSError:
        pass


def file_sha256(path: Path, *, quiet: bool = False) -> str:
    """sha256 of a file, computed once per version of it (see `_stamp_key`) and remembered in ~/.cache/segcli."""
    try:
        key = _stamp_key(path)
        known = _read_stamps().get(key)
        if known:
            return known
        if not quiet and path.stat().st_size > 50_000_000:
            print(f"segcli: computing the sha256 of {path} (once per file) ...", file=sys.stderr)
        digest = sha256_file(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read weights file ({e.strerror or e})") from None
    _write_stamp(key, digest)
    return digest


def verify(path: Path, expected: str | None, what: str, fix: str, *, quiet: bool = False) -> str:
    """Check `path` against the pinned sha256 (when there is one); return the actual digest."""
    actual = file_sha256(path, quiet=quiet)
    if expected and actual != expected:
        raise IntegrityError(
            f"{what}: sha256 mismatch for {path}: expected {expected}, got {actual}",
            hint=f"nothing was deleted; {fix}",
        )
    return actual


def fetch_url(url: str, dest: Path, *, quiet: bool = False, timeout: float = 30.0) -> Path:
    """Download `url` (http, https or file) to `dest` (atomically: complete or not at all), progress on
    stderr. Nothing is fetched when HF_HUB_OFFLINE is set."""
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    if urlparse(url).scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: only http, https and file URLs are downloaded")
    if offline():
        raise DownloadError(
            f"{url} is not downloaded: HF_HUB_OFFLINE is set", hint="unset it where the URL is reachable"
        )
    why = unreachable(url)
    if why is not None:
        raise DownloadError(f"{url}: download failed ({why})")

    try:
        with atomic_path(dest) as part, urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr, disable=quiet) as bar:
                while block := r.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"{url}: download failed ({reason})") from None
    return dest
