"""The segcli application: global options and command registration only."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .._version import __version__
from . import convert_cmd, download_cmd, evaluate_cmd, export_cmd, models_cmd, predict_cmd, quantize_cmd, train_cmd
from .common import STATE
from .help import EXIT_CODES, SHORT_HELP, SegcliCommand

app = typer.Typer(
    name="segcli",
    help="Batch semantic segmentation of image collections (UPerNet on ConvNeXt / Swin / ResNet, PSPNet).",
    epilog=EXIT_CODES["app"],
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: "[@revision]" and "<stem>" must print as written
)


def _version(value: bool) -> None:
    if value:
        print(f"segcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    registry: Annotated[
        Path | None,
        typer.Option(envvar="SEGCLI_REGISTRY", help="Extra registry TOML (same schema as weights.toml)."),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    STATE.registry = registry
    STATE.debug = debug
    # Pillow's warnings about one file (corrupt EXIF, odd TIFF tags) would interleave raw with progress;
    # what matters about a file is reported as its one error line.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\..*)?")


COMMANDS: dict[str, Callable[..., Any]] = {
    "models": models_cmd.models,
    "download": download_cmd.download,
    "predict": predict_cmd.predict,
    "evaluate": evaluate_cmd.evaluate,
    "convert": convert_cmd.convert,
    "export": export_cmd.export,
    "quantize": quantize_cmd.quantize,
    "train": train_cmd.train,
}
for _name, _fn in COMMANDS.items():
    app.command(_name, short_help=SHORT_HELP[_name], epilog=EXIT_CODES[_name], cls=SegcliCommand)(_fn)


def main() -> None:
    app(prog_name="segcli")  # every command maps its errors and Ctrl-C itself (common.handle_errors)
