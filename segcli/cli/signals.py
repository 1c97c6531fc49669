"""Stopping a batch cleanly: Ctrl-C, SIGTERM (kill, SLURM preemption), SIGHUP (closed terminal), a closed pipe.

The first signal asks the run to stop: the images in flight are finished, summary.json is written and the
exit code is 128 + the signal number (130, 143, 129). A second one stops at once (through
KeyboardInterrupt, which `handle_errors` maps to the same code). When stdout is a pipe whose reader went
away (`--jsonl | head -1`), the run stops the same way with 141 (SIGPIPE) and stdout goes to /dev/null.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any

from ..errors import Interrupted

SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)
SIGPIPE_CODE = 128 + 13


class StopNow(Interrupted):
    """The second signal: abandon the run now, exiting with `exit_code`."""


class GracefulStop:
    def __init__(self) -> None:
        self.exit_code: int | None = None  # set by the first stop request
        self._previous: dict[int, Any] = {}

    @property
    def stop(self) -> bool:
        return self.exit_code is not None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.exit_code is not None:
            raise StopNow(128 + signum)
        self.exit_code = 128 + signum
        name = "interrupted" if signum == signal.SIGINT else f"received {signal.Signals(signum).name}"
        # os.write, not print: the signal may arrive while the main thread is inside a print to stderr
        with contextlib.suppress(OSError):
            os.write(2, f"segcli: {name}: finishing the images in flight (again to stop at once)\n".encode())

    def stdout_closed(self) -> None:
        """The reader of stdout went away: stop like SIGPIPE would, but cleanly."""
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        if self.exit_code is None:
            self.exit_code = SIGPIPE_CODE

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
