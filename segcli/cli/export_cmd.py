"""`segcli export`: ONNX, TorchScript or fp16 safetensors, verified against the eager model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import EXIT_FAILED, UsageError
from .common import STATE, DebugOpt, PresetOpt, QuietOpt, RegistryOpt, eprint, handle_errors
from .progress import Activity

if TYPE_CHECKING:
    from ..api import Segmenter
    from ..backends.export import ExportOptions
    from ..model import Segmentor

ModelArg = Annotated[str, typer.Argument(help="Any --model source: registry name, Hub repo id, local directory.")]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", metavar="FORMAT", help="onnx | torchscript | safetensors-fp16.")
]
OutOpt = Annotated[
    Path,
    typer.Option("--out", "-o", metavar="PATH", help="Output file (.onnx / .pt), or directory for safetensors-fp16."),
]
SizeOpt = Annotated[str, typer.Option(metavar="HxW", help="Input size HxW the export is traced (and verified) at.")]
DynamicOpt = Annotated[bool, typer.Option("--dynamic", help="ONNX: any height and width (ConvNeXt / ResNet models).")]
PreprocessOpt = Annotated[
    bool, typer.Option("--with-preprocess", help="Bake normalisation in: the input is uint8 RGB NHWC.")
]
LabelsOpt = Annotated[bool, typer.Option("--labels", help="Append argmax: the output is class indices.")]
AtolOpt = Annotated[
    float, typer.Option(metavar="X", help="Largest allowed |logit difference| against the eager model.")
]
VerifyOpt = Annotated[bool, typer.Option("--verify/--no-verify", help="Run the export and compare it with the model.")]
OpsetOpt = Annotated[int, typer.Option(metavar="N", help="ONNX opset.")]


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"invalid --size {text!r}", hint="HxW, e.g. 512x512") from None
    return h, w


def _require_runtimes(fmt: str, verify: bool) -> None:
    from ..backends.onnx_session import onnxruntime, require_exporter

    if fmt == "onnx":
        require_exporter()
        if verify:
            onnxruntime()


def _verify(net: Segmentor, out: Path, opts: ExportOptions, atol: float, quiet: bool) -> dict[str, Any]:
    from ..backends import export as ex
    from ..backends.base import share_text
    from ..io.images import synthetic_photo

    v = ex.verify(net, out, opts, atol, synthetic_photo(*opts.size))
    if not quiet:
        for c in v.checks:
            diff = "-" if c["max_abs_diff"] is None else f"{c['max_abs_diff']:.2e}"
            agree = share_text(c["label_agreement"])
            eprint(
                f"segcli: verify {c['input']:<18} max|diff| {diff}  labels agree {agree}  {'ok' if c['ok'] else 'FAILED'}"
            )
    return {"verified": v.ok, "checks": v.checks}


def check_out(out: Path, seg: Segmenter, directory: bool) -> None:
    """The export may not go into the model's own folder (or the download cache): it would replace files there."""
    from ..fsutil import overlap, probe_writable
    from ..loading.hub import cache_dir

    o = seg.info.origin
    source = Path(o.path) if o.kind in ("local", "converted") and o.path else cache_dir()
    if overlap(out, source) in ("is", "is inside"):
        raise UsageError(
            f"--out {out} is inside the model's folder {source}: the export would replace its files",
            hint="export to a folder of its own, e.g. -o exported/",
        )
    try:
        probe_writable(out if directory else out.parent)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None


@handle_errors
def export(
    model: ModelArg,
    fmt: FormatOpt,
    out: OutOpt,
    size: SizeOpt = "512x512",
    dynamic: DynamicOpt = False,
    with_preprocess: PreprocessOpt = False,
    labels: LabelsOpt = False,
    atol: AtolOpt = 1e-4,
    verify: VerifyOpt = True,
    opset: OpsetOpt = 18,
    preset: PresetOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Export a model. ONNX and TorchScript are static (traced at --size; the batch stays dynamic) unless
    --dynamic (ONNX); the PPM's adaptive pooling is rewritten as fixed pooling, exactly equivalent, so
    sizes that are not multiples of the bins export. A sidecar FILE.json holds classes, palette, preset,
    input size and source. The export is then run (onnxruntime / torch.jit) on a random input and an
    image and compared with the eager model: beyond --atol the exit code is 1 (the file is kept)."""
    from ..api import Segmenter
    from ..backends import export as ex

    opts = ex.ExportOptions(fmt, _size(size), dynamic, with_preprocess, labels, opset)
    _require_runtimes(fmt, verify)
    seg = Segmenter.from_pretrained(model, registry=STATE.registry)
    net = seg.model
    if not isinstance(net, ex.Segmentor):
        raise UsageError(f"{model}: already an exported model")
    ex.validate(opts, net)
    check_out(out, seg, directory=fmt == "safetensors-fp16")
    if fmt == "safetensors-fp16":
        done = ex.save_native(net, seg.info, out)
        print(json.dumps({"format": fmt, "path": str(done)}))
        if not quiet:
            eprint(f"segcli: wrote {done} (float16 weights; --model {done} loads them as float32)")
        return
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory", hint="give a file name, e.g. model.onnx")
    guess = ex.estimate_seconds(net, fmt, dynamic)
    with Activity(f"exporting {fmt} (about {guess:.0f} s for this model on an idle machine)", not quiet):
        side = ex.export_file(net, seg.info, opts, out, seg.params(preset).to_json())
    result: dict[str, Any] = dict(format=fmt, path=str(out), sidecar=str(side), size=list(opts.size), dynamic=dynamic)
    result.update(verified=None, checks=[])
    if verify:
        with Activity("verifying the export against the model", not quiet):
            result.update(_verify(net, out, opts, atol, quiet))
    print(json.dumps(result))
    if verify and not result["verified"]:
        eprint(f"segcli: warning: {out} differs from the model beyond --atol {atol}; the file is kept")
        raise typer.Exit(EXIT_FAILED)
    if not quiet:
        eprint(f"segcli: exported {out} (+ {side.name})")
