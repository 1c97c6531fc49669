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
    str | None,
    typer.Option(
        metavar="NAME",
        help="The registry entry it is a checkpoint of (architecture, classes, protocol). Without it an "
        "mmsegmentation checkpoint is converted as the config it carries describes it.",
    ),
]
OutOpt = Annotated[
    Path, typer.Option("--out", "-o", metavar="DIR", help="Output directory (config.json + model.safetensors).")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a model already in --out.")]
ClassesOpt = Annotated[
    Path | None,
    typer.Option(metavar="FILE", help="Class names (JSON list or one per line) when they differ from --arch's."),
]


@handle_errors
def convert(
    src: SrcArg,
    out: OutOpt,
    arch: ArchOpt = None,
    classes: ClassesOpt = None,
    overwrite: OverwriteOpt = False,
    debug: DebugOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Convert a checkpoint to safetensors. Files are read with torch.load(weights_only=True) — a checkpoint
    that needs code to unpickle is refused — every key and shape is checked against the architecture (the
    only keys dropped are the synchronized BatchNorm's training counters in CSAIL files), and the output is
    byte-identical for the same input. The architecture is --arch's, or, for an mmsegmentation checkpoint
    without --arch, the one its own training config describes (read as data, never run); with both, they
    must agree in every field that changes the computation. Prints the output directory; use it with --model."""
    from ..loading.classes import read_class_names
    from ..loading.convert import check_output, convert_described
    from ..loading.convert import convert as run
    from ..loading.registry import load_registry

    for path in src:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    check_output(out, list(src), overwrite)  # before the checkpoint is read
    names = read_class_names(classes) if classes is not None else None
    if arch is None:
        if len(src) != 1:
            raise UsageError(
                "without --arch, convert reads one mmsegmentation .pth", hint="name the entry: --arch NAME"
            )
        done = convert_described(src[0], out, names)
        eprint(f"segcli: converted {src[0]} as its own config describes it → {done} (use --model {done})")
        print(done)
        return
    specs = load_registry(STATE.registry)
    if arch not in specs or not specs[arch].needs_conversion:
        choices = ", ".join(n for n, s in specs.items() if s.needs_conversion)
        raise UsageError(f"unknown --arch {arch!r}", hint=f"architectures with checkpoints to convert: {choices}")
    done = run(list(src), specs[arch], out, names)
    eprint(f"segcli: converted {' + '.join(map(str, src))} → {done} (use --model {done})")
    print(done)
