"""`segcli convert`: an mmsegmentation .pth checkpoint → a model directory segcli (and --model) loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .common import STATE, eprint, handle_errors


@handle_errors
def convert(
    src: Annotated[Path, typer.Argument(help="The mmsegmentation checkpoint (.pth).")],
    arch: Annotated[
        str, typer.Option(help="The registry entry it is a checkpoint of (architecture, classes, protocol).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (config.json + model.safetensors).")],
    classes: Annotated[
        Path | None, typer.Option(help="Class names (JSON list or one per line) when they differ from --arch's.")
    ] = None,
) -> None:
    """Convert an mmsegmentation checkpoint to safetensors. The file is read with
    torch.load(weights_only=True) — a checkpoint that needs code to unpickle is refused — every key and
    shape is checked against --arch, and the output is byte-identical for the same input. Prints the
    output directory; use it with --model."""
    from ..classes import read_class_names
    from ..convert import convert as run
    from ..registry import load_registry

    if not src.is_file():
        raise UsageError(f"{src}: no such file")
    registry = load_registry(STATE.registry)
    if arch not in registry:
        choices = ", ".join(n for n, s in registry.items() if s.needs_conversion)
        raise UsageError(f"unknown --arch {arch!r}", hint=f"mmseg architectures: {choices}")
    names = read_class_names(classes) if classes is not None else None
    done = run(src, registry[arch], out, names)
    eprint(f"segcli: converted {src} → {done} (use --model {done})")
    print(done)
