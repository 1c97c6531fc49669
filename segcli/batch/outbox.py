"""Outputs to an object store (`-o s3://bucket/prefix/`): made in a local staging folder, uploaded as each
image is done.

The run writes into the staging folder (`<segcli cache>/outbox/<hash of the URL>/`) exactly as into a local
`--out`; when an image's files are written, the writer (a Ray worker's too) uploads each as one PUT, its
palette PNG last — S3 and GCS show an object whole or not at all, so a reader never sees half a file, and
the PNG marks the image done in the bucket as on disk. An upload that fails is that image's failure line
(its staged files removed, so a rerun makes it again). The run-level files (summary.json last) follow at
the end. A resumed run skips an image finished with the same fingerprint in the bucket: the prefix is listed once, and an image whose output keys are all there has its PNG's first 64 KiB
read for the fingerprint (16 at a time). The bucket, not the staging folder, says what is done; the staging
folder keeps a copy of every output: delete it at will. With `--ray` the workers write under the driver's
staging path on their own machines (it must be writable there) and upload from there.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io.outputs import read_fingerprint_bytes
from ..io.remote import RemoteOptions, check_scheme, filesystem, fs_path, redact, with_retries

HEAD_BYTES = 64 << 10  # what is read of a finished image's PNG in the bucket (its fingerprint comes first)
THREADS = 16


@dataclass(frozen=True)
class Outbox:
    url: str  # the prefix, no trailing slash
    root: Path  # the staging folder
    opts: RemoteOptions

    @classmethod
    def of(cls, url: str, opts: RemoteOptions) -> Outbox:
        """The outbox of `-o URL` (UsageError for a URL that takes no writes)."""
        if check_scheme(url) == "http":
            raise UsageError(f"--out {redact(url)}: HTTP servers take no writes", hint="give an s3:// or gs:// prefix")
        from ..loading.hub import segcli_cache

        url = url.rstrip("/")
        parts = url.split("://", 1)[1].split("/")
        if not parts[0] or any(p in ("", ".", "..") for p in parts):
            raise UsageError(
                f"--out {redact(url)}: give a bucket and a prefix without empty, '.' or '..' parts",
                hint="e.g. -o s3://bucket/masks/",
            )
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        return cls(url, segcli_cache() / "outbox" / key, opts)

    def url_of(self, path: Path) -> str:
        return f"{self.url}/{path.relative_to(self.root).as_posix()}"

    def _fs(self) -> Any:
        return filesystem(check_scheme(self.url), self.opts)

    def upload(self, paths: list[Path]) -> None:
        """Each file of `paths` (inside the staging folder) to its key, in order (OSError naming the first
        that fails)."""
        fs = self._fs()
        for p in paths:
            key = fs_path(self.url_of(p))

            def put(p: Path = p, key: str = key) -> None:
                fs.put_file(str(p), key)

            try:
                with_retries(put, self.opts)
            except Exception as e:  # noqa: BLE001 - the store's errors are many kinds: one line
                from ..io.remote import describe

                raise OSError(f"cannot upload {p.name} to {self.url_of(p)} ({describe(e, self.opts)})") from None

    def listed(self) -> set[str]:
        """The keys under the prefix, relative to it (one listing)."""
        fs = self._fs()
        base = fs_path(self.url) + "/"
        try:
            found = with_retries(lambda: fs.find(base), self.opts)
        except FileNotFoundError:
            return set()
        except Exception as e:  # noqa: BLE001 - 403, timeouts…: the run cannot know what is done there
            from ..io.remote import describe

            raise UsageError(f"--out {redact(self.url)}: cannot be listed ({describe(e, self.opts)})") from None
        return {p[len(base) :] for p in found if p.startswith(base)}

    def finished(self, candidates: list[tuple[dict[str, Path], str]]) -> set[Path]:
        """The PNG paths (staging) of the candidates (output paths, fingerprint) finished in the bucket."""
        if not candidates:
            return set()
        keys = self.listed()
        rel = {p: p.relative_to(self.root).as_posix() for paths, _ in candidates for p in paths.values()}
        complete = [(paths, fp) for paths, fp in candidates if all(rel[p] in keys for p in paths.values())]
        fs = self._fs()

        def done(paths: dict[str, Path], fp: str) -> bool:
            key = fs_path(self.url_of(paths["png"]))
            try:
                head = with_retries(lambda: fs.cat_file(key, start=0, end=HEAD_BYTES), self.opts)
            except Exception:  # noqa: BLE001 - unreadable: not finished, made again
                return False
            return read_fingerprint_bytes(io.BytesIO(bytes(head))) == fp

        with ThreadPoolExecutor(min(THREADS, max(1, len(complete)))) as pool:
            flags = list(pool.map(lambda c: done(*c), complete))
        return {paths["png"] for (paths, _), ok in zip(complete, flags, strict=True) if ok}

    def run_files(self, summary_name: str) -> list[Path]:
        """This run's run-level files, the summary last (what `finish` uploads; an earlier run's left in the
        staging folder, another shard's summary say, are not sent again)."""
        return [self.root / n for n in ("legend.png", "classes.json", summary_name)]
