"""Progress on stderr: a Rich bar on a terminal, a plain line every few seconds otherwise, or nothing."""

from __future__ import annotations

import sys
import time
from typing import Any

PLAIN_EVERY_S = 10.0


class Progress:
    def __init__(self, total: int, enabled: bool = True, plain_every: float | None = None) -> None:
        self.total, self.enabled = total, enabled
        self.plain_every = PLAIN_EVERY_S if plain_every is None else plain_every
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.tty = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._start = self._last = time.monotonic()

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("segcli"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[failed]}"),
                console=Console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task("images", total=self.total, rate="", failed="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return self.counts["done"] / elapsed if elapsed > 0 else 0.0

    def print_error(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def advance(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        n = sum(self.counts.values())
        if self._bar is not None:
            failed = f"{self.counts['failed']} failed" if self.counts["failed"] else ""
            self._bar.update(self._task, completed=n, rate=f"{self._rate():.2f} img/s", failed=failed)
        elif self.enabled and (time.monotonic() - self._last >= self.plain_every):
            self._last = time.monotonic()
            rate = self._rate()
            left = self.total - n
            eta = f", ETA {int(left / rate // 60)}m{int(left / rate % 60):02d}s" if rate > 0 and left else ""
            print(
                f"segcli: {n}/{self.total} images ({self.counts['done']} done, {self.counts['skipped']} "
                f"skipped, {self.counts['failed']} failed), {rate:.2f} img/s{eta}",
                file=sys.stderr,
                flush=True,
            )

    def windows(self, done: int, total: int) -> None:
        """Progress within the images in the model (a raster's windows, a photo's views and windows): the bar
        shows them, plain output a line every `plain_every` seconds."""
        if self._bar is not None:
            self._bar.update(self._task, failed=f"windows {done}/{total}" if done < total else "")
        elif self.enabled and time.monotonic() - self._last >= self.plain_every and done < total:
            self._last = time.monotonic()
            n = sum(self.counts.values())
            print(
                f"segcli: image {min(n + 1, self.total)}/{self.total}: {done}/{total} windows of its views",
                file=sys.stderr,
                flush=True,
            )


class Activity:
    """One long step with no countable progress (an ONNX export): a spinner with the elapsed time on a
    terminal; otherwise a plain `segcli: <label> … N s` line after `every` seconds, then at doubling
    intervals up to `longest` (a ten-minute step is 8 lines, not 40), and `<label>: done in N s` at the
    end; nothing when disabled."""

    def __init__(self, label: str, enabled: bool = True, every: float = 15.0, longest: float = 120.0) -> None:
        self.label, self.enabled, self.every, self.longest = label, enabled, every, longest
        self._start = time.monotonic()
        self._status: Any = None
        self._stop: Any = None
        self._thread: Any = None

    def __enter__(self) -> Activity:
        if not self.enabled:
            return self
        if sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status(f"segcli: {self.label} …")
            self._status.start()
            return self
        import threading

        self._stop = threading.Event()
        start = self._start = time.monotonic()

        def tick() -> None:
            wait = self.every
            while not self._stop.wait(wait):
                print(f"segcli: {self.label} … {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
                wait = min(2 * wait, max(self.longest, self.every))

        self._thread = threading.Thread(target=tick, name="segcli-activity", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
            if exc[0] is None:
                print(
                    f"segcli: {self.label}: done in {time.monotonic() - self._start:.0f} s", file=sys.stderr, flush=True
                )
