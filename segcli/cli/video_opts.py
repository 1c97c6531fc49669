"""`segcli predict`'s options for video inputs (which frames are segmented: io.video.Selection)."""

from __future__ import annotations

from typing import Annotated

import typer

VIDEO = "Video"

EveryOpt = Annotated[
    int | None,
    typer.Option(metavar="N", help="Videos: segment every N-th frame (frames 0, N, 2N, …).", rich_help_panel=VIDEO),
]
FpsOpt = Annotated[
    float | None,
    typer.Option(
        "--fps",
        metavar="F",
        help="Videos: segment about F frames per second (the first frame of each 1/F s slot).",
        rich_help_panel=VIDEO,
    ),
]
StartOpt = Annotated[
    str | None,
    typer.Option(metavar="TIME", help="Videos: from this time (seconds or [HH:]MM:SS[.s]).", rich_help_panel=VIDEO),
]
EndOpt = Annotated[
    str | None,
    typer.Option(metavar="TIME", help="Videos: up to this time (exclusive).", rich_help_panel=VIDEO),
]
