"""Atomic file writes: the one way segcli puts a file on disk.

Data goes to a temporary file in the destination's folder, is flushed and fsynced, gets the permissions a
plain `open()` would give (0666 minus the umask; `mkstemp` alone gives 0600), and is renamed over the
destination: readers see the old file or the new one, never half of one. On any error (including
KeyboardInterrupt) the temporary file is removed. Temporary names carry the host and process id, so
`remove_stale_temps` can clear what a killed run left without touching another live run's files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_TAG = ".segcli-"  # temporary files: .<name>.segcli-<host>-<pid>-<random>.tmp
STALE_FOREIGN_S = 24 * 3600  # another host's temporary file is stale after a day


def umask() -> int:
    """The process's umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = umask()


def _host() -> str:
    """This machine and PID namespace: containers sharing a host name (and an output folder) have their
    own process ids, so a temporary file's owner is only looked up where its pid means something."""
    try:
        ns = f"_{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        ns = ""
    return (socket.gethostname().replace("-", "_").replace(".", "_") or "host") + ns


@contextlib.contextmanager
def atomic_path(path: Path, *, synced: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends without error
    (after an fsync, unless the block says it did one with `synced`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}{TEMP_TAG}{_host()}-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if not synced:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring)."""
    with atomic_path(path, synced=True) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def overlap(a: Path, b: Path) -> str | None:
    """How two locations overlap ("is", "is inside", "contains"), or None; symbolic links resolved."""
    ra, rb = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    if ra == rb:
        return "is"
    if rb in ra.parents:
        return "is inside"
    if ra in rb.parents:
        return "contains"
    return None


def probe_writable(folder: Path) -> None:
    """OSError unless files can be created in `folder`, or — when it does not exist yet — in its nearest
    existing ancestor (so that it can be made): read-only, no permission, a regular file on the way. A file
    is created and removed to find out; nothing is left behind."""
    here = Path(os.path.abspath(folder))
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        raise OSError(errno.ENOTDIR, f"{here} is not a folder", str(folder))
    fd, tmp = tempfile.mkstemp(dir=here, prefix=f".probe{TEMP_TAG}{_host()}-{os.getpid()}-", suffix=".tmp")
    try:
        os.write(fd, b"segcli")
    finally:
        os.close(fd)
        os.unlink(tmp)


def check_inside(root: Path, path: Path) -> None:
    """OSError unless `path`'s folder is really inside `root`: a symbolic link planted on the way (say
    `out/sub -> /elsewhere`) is not followed for writing."""
    real_root = os.path.realpath(root)
    expected = os.path.normpath(os.path.join(real_root, os.path.relpath(path.parent, root)))
    if os.path.realpath(path.parent) != expected:
        raise OSError(errno.ELOOP, "a folder on the way is a symbolic link leading elsewhere: not followed", str(path))


def require_regular(path: Path) -> os.stat_result:
    """`path`'s status when it is a regular file (following symlinks); OSError otherwise. Opening a FIFO or
    a device would block or never end, so every file segcli reads is checked first."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, socket or device)"
        raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL, kind, str(path))
    return st


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (OSError otherwise)."""
    st = require_regular(path)
    if st.st_size > max_bytes:
        raise OSError(errno.EFBIG, f"{st.st_size:,} bytes, more than the {max_bytes:,} allowed", str(path))
    with open(path, "rb") as f:
        return f.read(max_bytes + 1)[: max_bytes + 1]


def read_json_object(path: Path, max_bytes: int) -> dict[str, Any]:
    """The JSON object in a regular file of at most `max_bytes` (caches, stamps, summaries: files another
    process can change). OSError when it is not a readable regular file (a FIFO, a device, too large);
    ValueError when it is not a JSON object (broken, nested too deeply, a list)."""
    try:
        data = json.loads(read_regular(path, max_bytes).decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def remove_stale_temps(folder: Path) -> int:
    """Remove temporary files an earlier, killed segcli run left in `folder` (not recursive): those of this
    host whose process is gone, and other hosts' older than a day. Returns how many were removed."""
    removed, host = 0, _host()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp") and TEMP_TAG in name):
            continue
        owner = name.rsplit(TEMP_TAG, 1)[1].split("-")
        try:
            stale = _is_stale(owner, host, entry)
        except (OSError, ValueError, IndexError):
            continue
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return removed


def _is_stale(owner: list[str], host: str, entry: os.DirEntry) -> bool:
    if owner[0] != host:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_FOREIGN_S
    pid = int(owner[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
