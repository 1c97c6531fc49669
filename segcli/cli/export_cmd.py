"""`segcli export`: ONNX, TorchScript or fp16 safetensors, verified against the eager model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import EXIT_FAILED, UsageError
from .common import STATE, PresetOpt, QuietOpt, eprint, handle_errors


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"invalid --size {text!r}", hint="HxW, e.g. 512x512") from None
    return h, w


@handle_errors
def export(
    model: Annotated[str, typer.Argument(help="Any --model source: registry name, Hub repo id, local directory.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx | torchscript | safetensors-fp16.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.onnx / .pt), or directory for safetensors-fp16.")],
    size: Annotated[str, typer.Option(help="Input size HxW the export is traced (and verified) at.")] = "512x512",
    dynamic: Annotated[bool, typer.Option("--dynamic", help="ONNX: any height and width (ConvNeXt / ResNet models).")] = False,
    with_preprocess: Annotated[
        bool, typer.Option("--with-preprocess", help="Bake normalisation in: the input is uint8 RGB NHWC.")
    ] = False,
    labels: Annotated[bool, typer.Option("--labels", help="Append argmax: the output is class indices.")] = False,
    atol: Annotated[float, typer.Option(help="Largest allowed |logit difference| against the eager model.")] = 1e-4,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Run the export and compare it with the model.")] = True,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    preset: PresetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Export a model. ONNX and TorchScript are static (traced at --size; the batch stays dynamic) unless
    --dynamic (ONNX); the PPM's adaptive pooling is rewritten as fixed pooling, exactly equivalent, so
    sizes that are not multiples of the bins export. A sidecar FILE.json holds classes, palette, preset,
    input size and source. The export is then run (onnxruntime / torch.jit) on a random input and an
    image and compared with the eager model: beyond --atol the exit code is 1 (the file is kept)."""
    from .. import export as ex
    from ..api import Segmenter
    opts = ex.ExportOptions(fmt, _size(size), dynamic, with_preprocess, labels, opset)
    if fmt == "onnx":
        for module in ("onnx", "onnxscript"):
            try:
                __import__(module)
            except ImportError:
                raise ex.ExportError(f"{module} is not installed: torch's ONNX exporter needs it",
                                     hint="pip install 'segcli[onnx]'") from None  # fmt: skip
        if verify:
            ex.require_onnxruntime()
    seg = Segmenter.from_pretrained(model, registry=STATE.registry)
    if not isinstance(seg.model, ex.Segmentor):
        raise UsageError(f"{model}: already an exported model")
    ex.validate(opts, seg.model)
    if fmt == "safetensors-fp16":
        done = ex.save_native(seg.model, seg.info, out)
        print(json.dumps({"format": fmt, "path": str(done)}))
        if not quiet:
            eprint(f"segcli: wrote {done} (float16 weights; --model {done} loads them as float32)")
        return
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory", hint="give a file name, e.g. model.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        (ex.export_onnx if fmt == "onnx" else ex.export_torchscript)(seg.model, opts, tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    side = ex.write_sidecar(out, ex.sidecar(seg, opts, seg.params(preset).to_json()))
    result = {"format": fmt, "path": str(out), "sidecar": str(side), "size": list(opts.size), "dynamic": dynamic,
              "verified": None, "checks": []}  # fmt: skip
    if verify:
        from ..images import synthetic_photo

        v = ex.verify(seg.model, out, opts, atol, synthetic_photo(*opts.size))
        result.update(verified=v.ok, checks=v.checks)
        if not quiet:
            for c in v.checks:
                diff = "-" if c["max_abs_diff"] is None else f"{c['max_abs_diff']:.2e}"
                eprint(f"segcli: verify {c['input']:<18} max|diff| {diff}  labels agree {100 * c['label_agreement']:.3f}%"
                       f"  {'ok' if c['ok'] else 'FAILED'}")  # fmt: skip
    print(json.dumps(result))
    if verify and not result["verified"]:
        eprint(f"segcli: warning: {out} differs from the model beyond --atol {atol}; the file is kept")
        raise typer.Exit(EXIT_FAILED)
    if not quiet:
        eprint(f"segcli: exported {out} (+ {side.name})")

