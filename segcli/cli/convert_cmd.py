"""`segcli convert`: .pth checkpoints (mmsegmentation, CSAIL, semseg) → a model directory `--model` loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .common import STATE, DebugOpt, RegistryOpt, eprint, handle_errors

SrcArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="FILE...",
        help="The checkpoint: one .pth (mmsegmentation, semseg train_epoch_N.pth) or the encoder and decoder "
        "files of a CSAIL model, in either order.",
    ),
]
ArchOpt = Annotated[
    str,
    typer.Option(metavar="NAME", help="The registry entry it is a checkpoint of (architecture, classes, protocol)."),
]
OutOpt = Annotated[
    Path, typer.Option("--out", "-o", metavar="DIR", help="Output directory (config.json + model.safetensors).")
]
ClassesOpt = Annotated[
    Path | None,
    typer.Option(metavar="FILE", help="Class names (JSON list or one per line) when they differ from --arch's."),
]


@handle_errors
def convert(
    src: SrcArg,
    arch: ArchOpt,
    out: OutOpt,
    classes: ClassesOpt = None,
    debug: DebugOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Convert a checkpoint to safetensors. Files are read with torch.load(weights_only=True) — a checkpoint
    that needs code to unpickle is refused — every key and shape is checked against --arch (the only keys
    dropped are the synchronized BatchNorm's training counters in CSAIL files), and the output is
    byte-identical for the same input. Prints the output directory; use it with --model."""
    from ..loading.classes import read_class_names
    from ..loading.convert import convert as run
    from ..loading.registry import load_registry

    for path in src:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    specs = load_registry(STATE.registry)
    if arch not in specs or not specs[arch].needs_conversion:
        choices = ", ".join(n for n, s in specs.items() if s.needs_conversion)
        raise UsageError(f"unknown --arch {arch!r}", hint=f"architectures with checkpoints to convert: {choices}")
    names = read_class_names(classes) if classes is not None else None
    done = run(list(src), specs[arch], out, names)
    eprint(f"segcli: converted {' + '.join(map(str, src))} → {done} (use --model {done})")
    print(done)
