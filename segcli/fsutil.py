"""Atomic file writes: the one way segcli puts a file on disk.

Data goes to a temporary file in the destination's folder, is flushed and fsynced, gets the permissions a
plain `open()` would give (0666 minus the umask; `mkstemp` alone gives 0600), and is renamed over the
destination: readers see the old file or the new one, never half of one. On any error (including
KeyboardInterrupt) the temporary file is removed. Temporary names carry the host and process id, so
`remove_stale_temps` can clear what a killed run left without touching another live run's files.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TEMP_TAG = ".segcli-"  # temporary files: .<name>.segcli-<host>-<pid>-<random>.tmp
STALE_FOREIGN_S = 24 * 3600  # another host's temporary file is stale after a day


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _host() -> str:
    return socket.gethostname().replace("-", "_").replace(".", "_") or "host"


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
