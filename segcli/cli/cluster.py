"""`segcli predict --ray`: its options, and standard output kept for the records while Ray runs."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Annotated, TextIO

import typer

RUN = "Execution"

RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="[ADDRESS]",
        help="Run on Ray Data: ADDRESS as Ray takes it (auto: the running cluster or $RAY_ADDRESS; joined within "
        "$SEGCLI_RAY_CONNECT_TIMEOUT, 60 s); alone, a local Ray of the run's own is started and stopped (never "
        "another one running here). Put it after the inputs, or write --ray=ADDRESS. The [ray] extra.",
        rich_help_panel=RUN,
    ),
]

WorkersOpt = Annotated[
    int | None,
    typer.Option(
        metavar="N", help="--ray: actors (default: one per GPU, else per CPU / --threads).", rich_help_panel=RUN
    ),
]

GpusOpt = Annotated[
    float | None,
    typer.Option(
        metavar="G", help="--ray: GPUs per actor (default: 1 when the cluster has GPUs, else 0).", rich_help_panel=RUN
    ),
]


@contextlib.contextmanager
def records_stdout(ray: bool) -> Iterator[TextIO]:
    """Where --jsonl records go: stdout; with --ray everything else written to fd 1 (Ray's "(raylet) ..."
    notes) goes to stderr meanwhile, so that stdout stays JSON."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test runner's buffer): leave it
        fd = -1
    if not ray or fd < 0:
        yield sys.stdout
        return
    sys.stdout.flush()
    kept = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8")
    os.dup2(sys.stderr.fileno(), fd)
    try:
        yield kept
    finally:
        with contextlib.suppress(OSError):  # a closed pipe (| head): nothing more to say there
            kept.flush()
        os.dup2(kept.fileno(), fd)
        with contextlib.suppress(OSError):
            kept.close()
