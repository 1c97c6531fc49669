"""`segcli predict`: segment images and folders into palette PNGs + JSON summaries."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import EXIT_FAILED, UsageError
from .common import STATE, DeviceOpt, DtypeOpt, ModelOpt, PresetOpt, QuietOpt, eprint, handle_errors

DEFAULT_MODEL = "upernet-convnext-tiny"


@handle_errors
def predict(
    inputs: Annotated[
        list[str], typer.Argument(metavar="IMAGE_OR_DIR...", help="Image files and/or folders (searched recursively).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")],
    model: ModelOpt = DEFAULT_MODEL,
    preset: PresetOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    quiet: QuietOpt = False,
) -> None:
    """Segment images: for each input, <out>/<relative path>/<stem>.png (palette PNG, pixel value = class
    index) and <stem>.json (image size, model, classes present with pixel counts and fractions).

    Folders keep their structure under --out. Unreadable images are reported on stderr (one line each)
    and the batch goes on; the exit code is then 1."""
    from ..api import Segmenter
    from ..batch import discover, run
    from ..presets import get_preset

    if preset is not None:
        get_preset(preset)  # a typo is a usage error before any download or model loading
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    found = discover(inputs)
    for arg, reason in found.errors:
        eprint(f"segcli: error: {arg}: {reason}")
    if not found.items and not found.errors:
        raise UsageError("no images found in the inputs", hint="supported: jpg jpeg png bmp tif tiff webp")
    seg = Segmenter.from_pretrained(model, device=device, dtype=dtype, registry=STATE.registry)
    result = run(
        seg,
        found.items,
        out,
        preset=preset,
        on_error=lambda _path, reason: eprint(f"segcli: error: {reason}"),
        progress=not quiet and sys.stderr.isatty(),
    )
    failed = len(result.failed) + len(found.errors)
    if not quiet:
        eprint(f"segcli: {result.done} image(s) segmented into {out}, {failed} failed")
    if failed:
        raise typer.Exit(EXIT_FAILED)
