"""What every command shares: the error → message + exit code map, shared options, output helpers."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..errors import EXIT_INTERRUPTED, SegcliError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    registry: Path | None = None
    debug: bool = False


STATE = State()


def eprint(*parts: object) -> None:
    """A plain line on stderr (no markup, so file names with brackets print as they are)."""
    print(*parts, file=sys.stderr, flush=True)


def report(err: SegcliError) -> None:
    """Exactly one line per error: `segcli: error: <what, naming the file> (<how to fix it>)`."""
    eprint(f"segcli: error: {err}")


def handle_errors(fn: F) -> F:
    """The one place that maps exceptions to messages and exit codes (tracebacks only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SegcliError as e:
            if STATE.debug or os.environ.get("SEGCLI_DEBUG"):
                raise
            report(e)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            eprint("segcli: interrupted")
            raise typer.Exit(getattr(e, "exit_code", EXIT_INTERRUPTED)) from None

    return wrapper  # type: ignore[return-value]


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Registry name (see `segcli models`), Hub repo id owner/name[@revision], or a local directory "
        "with config.json + model.safetensors.",
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")]
DtypeOpt = Annotated[str, typer.Option(help="float32 | bfloat16 | float16.")]
PresetOpt = Annotated[
    str | None,
    typer.Option(help="Inference preset: hf | mmseg | mmseg-ms (default: the model's own; mmseg for registry models)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]

# The inference options predict and evaluate (with --model) share: each overrides the preset's value.
INFERENCE = "Inference (overrides the preset)"
ResizeOpt = Annotated[
    str | None, typer.Option(help="none | SHORT[:LONG] (keep ratio) | HxW.", rich_help_panel=INFERENCE)
]
ModeOpt = Annotated[str | None, typer.Option(help="whole | slide (sliding windows).", rich_help_panel=INFERENCE)]
CropOpt = Annotated[str | None, typer.Option(help="Slide window size: N or HxW.", rich_help_panel=INFERENCE)]
StrideOpt = Annotated[str | None, typer.Option(help="Slide window stride: N or HxW.", rich_help_panel=INFERENCE)]
ScalesOpt = Annotated[
    str | None, typer.Option(help="Ratios of the resize target, e.g. 0.5,1,1.5.", rich_help_panel=INFERENCE)
]
FlipOpt = Annotated[
    bool | None, typer.Option("--flip/--no-flip", help="Add horizontally flipped views.", rich_help_panel=INFERENCE)
]
TileBatchOpt = Annotated[
    int | None, typer.Option(help="Windows per forward pass (default 1 on CPU, 4 on GPU).", rich_help_panel=INFERENCE)
]


def inference_overrides(
    resize: str | None,
    mode: str | None,
    crop: str | None,
    stride: str | None,
    scales: str | None,
    flip: bool | None,
    tile_batch: int | None,
) -> dict[str, Any]:
    """The inference options as `Segmenter.params` overrides (None: the preset's value)."""
    return {
        "resize": resize,
        "mode": mode,
        "crop": crop,
        "stride": stride,
        "scales": scales,
        "flip": flip,
        "tile_batch": tile_batch,
    }
