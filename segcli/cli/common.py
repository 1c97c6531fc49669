"""What every command shares: the error → message + exit code map, shared options, output helpers."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from ..errors import EXIT_INTERRUPTED, SegcliError

if TYPE_CHECKING:
    from ..api import Segmenter
    from ..backends import Choice
    from ..engine.presets import Params

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
    """One line per error: `segcli: error: <what, naming the file> (<how to fix it>)`; a hint of several
    steps (what to run where) follows on indented lines of its own."""
    if err.hint and "\n" in err.hint:
        eprint(f"segcli: error: {err.message}")
        for line in err.hint.splitlines():
            eprint(f"  {line}")
    else:
        eprint(f"segcli: error: {err}")


def handle_errors(fn: F) -> F:
    """The one place that maps exceptions to messages and exit codes (tracebacks only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("debug"):  # the global options, also accepted after the command name
            STATE.debug = True
        if kwargs.get("registry") is not None:
            STATE.registry = kwargs["registry"]
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
        metavar="MODEL",
        help="Registry name (see `segcli models`), Hub repo id owner/name[@revision], or a local directory "
        "with config.json + model.safetensors.",
    ),
]
DeviceOpt = Annotated[str, typer.Option(metavar="DEVICE", help="auto | cpu | cuda | cuda:N | mps.")]
BackendOpt = Annotated[
    str,
    typer.Option(
        metavar="BACKEND",
        envvar="SEGCLI_BACKEND",
        help="auto | torch | compile | onnxruntime. auto: the fastest of those that support the model and preset "
        "here, measured on this machine (about a minute, once per model and view size; cached).",
    ),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        metavar="DTYPE",
        envvar="SEGCLI_DTYPE",
        help="auto | float32 | bfloat16 | float16. auto: bfloat16 where the hardware computes it natively "
        "(AVX512-BF16 / AMX CPUs, bf16 GPUs) for the model families that keep their labels, else float32.",
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        metavar="PRESET",
        help="Inference preset: hf | mmseg | mmseg-ms | csail | semseg | semseg-ms (default: the model's own: "
        "mmseg, csail or semseg for registry models, hf for Hub repos and local directories).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]
# `segcli --debug --registry FILE predict ...` and `segcli predict ... --debug --registry FILE` both work
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")]
RegistryOpt = Annotated[
    Path | None, typer.Option(metavar="FILE", help="Extra registry TOML (same schema as weights.toml).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]

# The inference options predict and evaluate (with --model) share: each overrides the preset's value.
INFERENCE = "Inference (overrides the preset)"
ResizeOpt = Annotated[
    str | None, typer.Option(metavar="SIZE", help="none | SHORT[:LONG] (keep ratio) | HxW.", rich_help_panel=INFERENCE)
]
ModeOpt = Annotated[
    str | None, typer.Option(metavar="MODE", help="whole | slide (sliding windows).", rich_help_panel=INFERENCE)
]
CropOpt = Annotated[
    str | None, typer.Option(metavar="N|HxW", help="Slide window size: N or HxW.", rich_help_panel=INFERENCE)
]
StrideOpt = Annotated[
    str | None, typer.Option(metavar="N|HxW", help="Slide window stride: N or HxW.", rich_help_panel=INFERENCE)
]
ScalesOpt = Annotated[
    str | None,
    typer.Option(metavar="R,R,...", help="Ratios of the resize target, e.g. 0.5,1,1.5.", rich_help_panel=INFERENCE),
]
FlipOpt = Annotated[
    bool | None, typer.Option("--flip/--no-flip", help="Add horizontally flipped views.", rich_help_panel=INFERENCE)
]
TileBatchOpt = Annotated[
    int | None,
    typer.Option(metavar="N", help="Windows per forward pass (default 1 on CPU, 4 on GPU).", rich_help_panel=INFERENCE),
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


def earlier_backend(out: Path, overwrite: bool) -> str | None:
    """The backend the earlier run into `out` recorded in its summary.json (None without one, or with
    --overwrite): `auto` keeps it, so a resumed run's outputs keep one fingerprint."""
    if overwrite:
        return None
    try:
        doc = json.loads((out / "summary.json").read_text())
        name = doc["inference"]["backend"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if name in ("torch", "compile", "onnxruntime") else None


def choose_backend(
    seg: Segmenter, backend: str, params: Params, images: int, quiet: bool, earlier: str | None = None
) -> Choice:
    """Pick the backend and say which: `auto` keeps the `earlier` run's backend where it still applies (resume),
    else calibrates when nothing is cached and the run has enough images."""
    from ..backends import CALIBRATE_MIN

    log = None if quiet else (lambda m: eprint(f"segcli: {m}"))
    choice = None
    if str(backend).lower() == "auto" and earlier is not None:
        with contextlib.suppress(SegcliError):  # it no longer applies (another preset, onnxruntime gone)
            choice = seg.use_backend(earlier, params, log=log)
            choice = replace(choice, requested="auto", reason="the backend of the earlier run into this folder")
            seg.backend_choice = choice
    if choice is None:
        choice = seg.use_backend(backend, params, calibrate=images >= CALIBRATE_MIN, log=log)
    if log is not None and choice.requested != "torch":
        log(f"backend {choice.backend} ({choice.reason})")
    return choice
