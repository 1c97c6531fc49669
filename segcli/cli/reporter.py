"""A run as it goes, on the terminal: the `Events` of `segcli.batch.predict`, printed."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, TextIO

from ..batch.request import Events
from ..io.outputs import json_line
from .common import eprint
from .progress import Progress
from .signals import SIGPIPE_CODE, GracefulStop

if TYPE_CHECKING:
    from ..batch import ImageRecord


class Reporter(Events):
    """Notes and errors on stderr; progress from the start of the run, with a clean stop on the first Ctrl-C /
    SIGTERM from then on (`scope` holds both until the caller leaves it); each record's error line and, with
    `jsonl`, its JSON line on `out`."""

    def __init__(self, quiet: bool, jsonl: bool = False, out: TextIO | None = None) -> None:
        self.quiet, self.jsonl, self.out = quiet, jsonl, out or sys.stdout
        self.progress = Progress(0, enabled=False)
        self.stop = GracefulStop()
        self.scope = contextlib.ExitStack()

    def say(self, level: str, message: str) -> None:
        if level != "info":
            self.progress.print_error(f"segcli: {level}: {message}")
        elif not self.quiet:
            eprint(f"segcli: {message}")

    def started(self, total: int) -> None:
        self.progress = Progress(total, enabled=not self.quiet)
        self.scope.enter_context(self.stop)  # until the summary is written
        self.scope.enter_context(self.progress)

    def record(self, record: ImageRecord) -> None:
        if record.status == "failed":
            self.progress.print_error(f"segcli: error: {record.error}")
        if self.jsonl and self.stop.exit_code != SIGPIPE_CODE:
            try:
                print(json_line(record.to_json()), flush=True, file=self.out)
            except BrokenPipeError:
                self.stop.stdout_closed()
        self.progress.advance(record.status)

    def windows(self, done: int, total: int) -> None:
        self.progress.windows(done, total)

    def should_stop(self) -> bool:
        return self.stop.stop
