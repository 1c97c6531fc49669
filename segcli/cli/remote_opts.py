"""`segcli predict`'s options for inputs read from URLs (io.remote)."""

from __future__ import annotations

from typing import Annotated

import typer

REMOTE = "URLs and object stores"

TimeoutOpt = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        help="URLs: a request without an answer (connecting, or between reads) for this long fails.",
        rich_help_panel=REMOTE,
    ),
]
RetriesOpt = Annotated[
    int,
    typer.Option(
        metavar="N",
        help="URLs: try a timed-out, dropped or 5xx request N more times (0.5 s, 1 s, 2 s … apart).",
        rich_help_panel=REMOTE,
    ),
]
