"""What every command shares: the error → message + exit code map, shared options, output helpers."""

from __future__ import annotations

import functools
import inspect
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
        help="auto | torch | compile | onnxruntime | openvino. auto: the fastest of those that support the model and preset "
        "here, measured on this machine (about a minute, once per model and view size; cached).",
    ),
]
BackendMeasureOpt = Annotated[
    str,
    typer.Option(
        metavar="WHEN",
        envvar="SEGCLI_BACKEND_MEASURE",
        help="For --backend auto: auto (measure once when nothing is cached and measuring costs at most 10 % of the "
        "run) | again "
        "(measure now, replacing the cached choice: after a busy machine) | never (the cached choice, else "
        "torch). `segcli models --backends` lists the cached choices.",
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
        help="Inference preset: hf | mmseg | mmseg-ms | csail | semseg | semseg-ms | upp (default: the model's "
        "own: the one its registry entry or converted directory records — mmseg, csail, semseg or upp — and hf for Hub repos and save_pretrained "
        "directories).",
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
BlendOpt = Annotated[
    str | None,
    typer.Option(
        metavar="flat|gaussian|hann",
        help="How slide windows are averaged: flat (mmseg's mean), or weighted towards each window's centre.",
        rich_help_panel=INFERENCE,
    ),
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

ClassMapOpt = Annotated[
    str | None,
    typer.Option(
        metavar="FILE",
        help="Merge the model's classes: JSON {source: target} or CSV source,target rows; '*' = every class not "
        "named; a target null / empty = ignored (label 255). Every output uses the merged classes.",
        rich_help_panel=INFERENCE,
    ),
]


# name, annotation, default: the options every command that runs a model on images takes (`with_inference`)
INFERENCE_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("preset", PresetOpt, None),
    ("resize", ResizeOpt, None),
    ("mode", ModeOpt, None),
    ("crop", CropOpt, None),
    ("stride", StrideOpt, None),
    ("blend", BlendOpt, None),
    ("scales", ScalesOpt, None),
    ("flip", FlipOpt, None),
    ("tile_batch", TileBatchOpt, None),
    ("device", DeviceOpt, "auto"),
    ("dtype", DtypeOpt, "auto"),
    ("backend", BackendOpt, "auto"),
    ("backend_measure", BackendMeasureOpt, "auto"),
    ("class_map", ClassMapOpt, None),
)


def with_inference(fn: F) -> F:
    """Give a command the shared inference options in place of its `inference` parameter; the command
    receives them as one `batch.Inference`."""
    sig = inspect.signature(fn, eval_str=True)  # typer reads a given __signature__ as it is
    params = list(sig.parameters.values())
    at = [p.name for p in params].index("inference")
    added = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in INFERENCE_OPTIONS
    ]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at + 1 :]]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..batch.request import Inference

        values = {name: kwargs.pop(name) for name, _, default in INFERENCE_OPTIONS if name in kwargs}
        return fn(*args, inference=Inference(**values), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*params[:at], *added, *keyword])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k != "inference"}
    wrapper.__annotations__.update({n: a for n, a, _ in INFERENCE_OPTIONS})
    return wrapper  # type: ignore[return-value]
